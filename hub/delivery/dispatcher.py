"""The delivery dispatcher: publishes accepted messages for pull and pushes them to receivers.

One `sweep` is one pass, safe to run in any number of threads and hub processes on one
database at once:

1. Publish. Every permitted delivery committed since the last pass gets a `published_at`,
   strictly increasing in the order the publisher sees them and later than anything already
   published to that receiver, under a lock only one publisher holds at a time
   (`pg_advisory_xact_lock` on PostgreSQL; an SQLite write transaction is exclusive anyway).
   Pulls see only published deliveries and page by `published_at`, so a message whose
   intake commits late is published after everything its receiver has already seen, never
   behind the receiver's cursor.
2. Claim. Due deliveries (queued, published, `next_attempt_at` passed) are locked
   (`FOR UPDATE SKIP LOCKED` on PostgreSQL) and leased: `next_attempt_at` and
   `leased_until` move to now + 2 x timeout (+1 s) and the claim commits (the background
   Dispatcher's claims count the unexpired leases per receiver, of every process, against
   HUB_DELIVERY_PER_RECEIVER). Another process sees a leased row as not
   due. Only the oldest unfinished delivery of one (receiver, patient) is due: a later one
   waits until the earlier is delivered, dead-lettered or withheld ("oldest" is by id, the
   order of acceptance; a pull-only delivery, without a next attempt, holds nothing back).
   Different receivers and different patients never wait for each other; the claimed
   deliveries of one pass are sent concurrently, one thread each, so a slow receiver delays
   only its own queue. The background Dispatcher does not wait for a pass's attempts
   before its next pass either (`sweep`, one pass for tests and the CLI, does).
3. Send, each in its own short transactions around the HTTP call, never holding a lock
   while waiting for a receiver: decide again whether the delivery may go
   (`hub.messaging.routing.decide_delivery`; no longer permitted -> `withheld` with the new
   reason and basis, not sent), find the receiver's active hl7-fhir-msg Endpoint (none: the
   receiver pulls; `next_attempt_at` becomes NULL and the delivery waits for the pull), load
   the stored Bundle, drop redacted entries, renew the lease, commit; hand it to the push
   channel (an adapters.channels.OutboundChannel, made by adapters.registry.push_channel:
   the FHIR push of adapters/fhir_push POSTs it, and its HTTP transport is the test seam);
   then record the outcome in a new transaction (a 2xx the database cannot take at that
   moment, PostgreSQL restarting, is tried again until the lease ends: given up, it would be
   sent again): 2xx `delivered`; network error, timeout, 5xx or 429 a retry after
   first_retry x 2^(attempts-1) (+-20 % jitter, at most an hour; a 429's Retry-After wins),
   or `dead-letter` once created_at + delivery_max_age has passed (the last retry is made at
   that moment); any other status `dead-letter` at once.

Delivery is at least once, not exactly once; receivers recognise a repeat by
MessageHeader.id, which CONTRACT 4 makes idempotent. A repeat happens when the hub cannot
know the receiver took the message: the answer was lost (timeout or connection reset after
the receiver had stored it; a 5xx sent after storing), or the process was killed between its
POST and recording the outcome, or the database was away for longer than the rest of the
lease when the outcome was to be recorded. A killed process leaves its lease to expire; the
delivery is then claimed and sent again, so nothing is lost, and only the deliveries in
flight at the kill can arrive twice. Otherwise no delivery is sent twice and none is sent
by two processes at once: a leased row is not due for anyone else, the lease is renewed just
before the POST and outlasts the timeout twice over, and a failure is recorded only by the
lease holder (a success is recorded whoever holds it, since the receiver has the message).
The one gap is a receiver trickling its answer byte by byte: httpx's timeout is per read, so
such an attempt can outlive its lease and overlap a retry.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, cast

import httpx
from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from adapters.channels import OutboundChannel, Sent
from hub.audit.recorder import Auditor
from hub.config import Settings
from hub.consent.gate import decision_item
from hub.consent.policy import Decision, Verdict
from hub.db.engine import Database
from hub.db.types import utcnow
from hub.delivery import content
from hub.delivery.channel import push_channel
from hub.delivery.scheduled import expect_ack
from hub.delivery.steps import record_step
from hub.fhir.jsonio import dumps_bytes
from hub.fhir.urls import without_credentials
from hub.messaging.models import DeliveryRow, MessageRow
from hub.store.dates import format_instant

log = logging.getLogger("hub.delivery")

D = DeliveryRow
BATCH = 16
"""Deliveries claimed (and sent concurrently) per pass."""
PUBLISH_BATCH = 5000
COALESCE = 0.02
"""Seconds a sweeper woken by an attempt's end waits for others to end before its pass."""
MAX_BACKOFF = 3600.0
"""Seconds: the backoff stops doubling here."""
LEASE_MARGIN = 1.0
RECORD_RETRY = 0.2
"""Seconds between tries to record a delivery the receiver took, while the database is away."""
PUBLISH_LOCK = 0x6361726568756201  # pg_advisory_xact_lock key of the publisher ("carehub\x01")
CLAIM_LOCK = 0x6361726568756202  # ... of a claim that counts the leases per receiver
_TICK = timedelta(microseconds=1)

Result = Literal["delivered", "retry", "dead-letter", "withheld", "pull-only", "lost"]


@dataclass
class SweepReport:
    """What one pass did."""

    published: int = 0
    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    withheld: int = 0
    pull_only: int = 0
    lost: int = 0  # the lease passed to someone else (or the row changed) before the send
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Claim:
    id: int
    lease: datetime
    receiver: str = ""


@dataclass(frozen=True)
class _Ready:
    """A delivery about to be sent."""

    id: int
    lease: datetime
    address: str
    body: bytes
    created_at: datetime
    attempts: int


Clock = Callable[[], datetime]


def _lease(settings: Settings, at: datetime) -> datetime:
    return at + timedelta(seconds=settings.delivery_timeout * 2 + LEASE_MARGIN)


def _any(db: Database, query: Any) -> bool:
    """Whether `query` finds a row: looked up first in a read transaction, so that an idle
    pass never takes SQLite's one write lock."""
    with db.session(write=False) as session:
        return session.execute(query.limit(1)).first() is not None


# --- 1. publish ------------------------------------------------------------------------------


def publish(db: Database) -> int:
    """Give every newly committed permitted delivery its `published_at`; how many.

    Stamps rise strictly in the order seen (by id), and each is later than everything
    already published to the same receiver (pulls page per receiver), whatever the clocks of
    earlier publishers said."""
    if not _any(db, select(D.id).where(D.status == "queued", D.published_at.is_(None))):
        return 0
    with db.session(write=True) as session:
        if db.dialect == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PUBLISH_LOCK})
        # Only queued deliveries are unpublished: nothing else happens to one before it is
        # published (withheld ones never are), so ix_deliveries_due narrows this.
        fresh = session.execute(
            select(D.id, D.receiver_org).where(D.status == "queued", D.published_at.is_(None))
            .order_by(D.id).limit(PUBLISH_BATCH)).all()
        if not fresh:
            return 0
        last = {org: session.scalar(select(func.max(D.published_at))
                                    .where(D.receiver_org == org))
                for org in {org for _, org in fresh}}
        stamp = utcnow()
        rows = []
        for delivery_id, org in fresh:
            before = last[org]
            if before is not None and stamp <= before:
                stamp = before + _TICK
            rows.append({"id": delivery_id, "published_at": stamp})
            stamp += _TICK
        session.execute(update(D), rows)
        return len(rows)


# --- 2. claim --------------------------------------------------------------------------------


def _due(at: datetime) -> Any:
    """Due deliveries, each the head of its (receiver, patient) queue: the oldest queued one
    with a next attempt (pull-only ones have none and hold nothing back). One grouping pass
    over the queued rows (NULL patients form a queue of their own), not a probe per row."""
    heads = (select(func.min(D.id))
             .where(D.status == "queued", D.next_attempt_at.is_not(None))
             .group_by(D.receiver_org, D.patient_ref))
    return select(D.id).where(
        D.id.in_(heads), D.status == "queued", D.next_attempt_at <= at,
        D.published_at.is_not(None)).order_by(D.next_attempt_at, D.id)


_LEASED = (select(D.receiver_org, func.count())
           .where(D.leased_until > bindparam("at"), D.status == "queued")
           .group_by(D.receiver_org))


def claim(db: Database, settings: Settings, *, at: datetime, limit: int = BATCH,
          under_way: Mapping[str, int] | None = None) -> list[_Claim]:
    """Lease up to `limit` due deliveries to this caller; commits before returning.

    With `under_way` (attempts the caller has in flight, by receiver), no receiver gets more
    than settings.delivery_per_receiver in flight, counting the unexpired leases of every
    dispatcher process on the database (`leased_until`) besides the caller's own: a receiver
    at that many is passed over, and one below it gets only what is left. Such claims take
    turns (on PostgreSQL an advisory lock; SQLite's write transaction is exclusive), so two
    processes cannot both fill the same gap."""
    if not _any(db, _due(at)):
        return []
    cap = settings.delivery_per_receiver if under_way is not None else limit  # limit: none
    with db.session(write=True) as session:
        busy = Counter(under_way or {})
        if under_way is not None:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLAIM_LOCK})
            for org, leased in session.execute(_LEASED, {"at": at}):
                busy[org] = max(busy[org], int(leased))
        # SQLite renders no FOR UPDATE: its write transaction is exclusive already.
        query = _due(at).add_columns(D.receiver_org)
        full = sorted(org for org, n in busy.items() if n >= cap)
        if full:
            query = query.where(D.receiver_org.not_in(full))
        rows = session.execute(query.limit(limit).with_for_update(skip_locked=True, of=D)).all()
        taken: list[tuple[int, str]] = []
        for delivery_id, org in rows:
            if busy[org] < cap:
                taken.append((delivery_id, org))
                busy[org] += 1
        if not taken:
            return []
        lease = _lease(settings, at)
        session.execute(update(D).where(D.id.in_([i for i, _ in taken]))
                        .values(next_attempt_at=lease, leased_until=lease))
        return [_Claim(i, lease, org) for i, org in taken]


# --- 3. send ---------------------------------------------------------------------------------


def _still_ours(session: Session, c: _Claim) -> DeliveryRow | None:
    """The claimed row, locked, if it is still queued under this lease."""
    row = session.scalars(select(D).where(D.id == c.id).with_for_update()).one_or_none()
    if row is None or row.status != "queued" or row.next_attempt_at != c.lease:
        return None
    return row


def _audit(session: Session, auditor: Auditor | None, row: DeliveryRow, message: MessageRow,
           reason: str) -> None:
    """Record a disclosure decision taken at send time (in the delivery's transaction)."""
    if auditor is None:
        return
    verdict = Verdict(cast(Decision, row.decision), row.basis, reason)
    auditor.disclosures(session, [decision_item(
        recipient=f"Organization/{row.receiver_org}", patient=row.patient_ref,
        resources=[f"Bundle/{message.bundle_id}"], verdict=verdict, event=message.event)],
        subject=None)


def _prepare(db: Database, settings: Settings, c: _Claim,
             clock: Clock, auditor: Auditor | None = None) -> _Ready | Result:
    """Decide again, find the endpoint, load the Bundle, renew the lease; commit."""
    with db.session(write=True) as session:
        row = _still_ours(session, c)
        if row is None:
            return "lost"
        message = session.get_one(MessageRow, row.message_id)
        bundle = content.message_bundle(session, message)
        verdict = content.verdict_now(session, settings, message, row, bundle)
        if verdict.decision == "deny":
            row.status, row.decision, row.basis = "withheld", "deny", verdict.basis
            row.reason = f"Withheld before sending: {verdict.reason}"
            row.next_attempt_at = row.leased_until = None
            _audit(session, auditor, row, message, row.reason)
            return "withheld"
        address = content.endpoint_address(session, row.receiver_org)
        if address is None:
            row.next_attempt_at = row.leased_until = None  # the receiver pulls
            return "pull-only"
        row.decision, row.basis, row.reason = verdict.decision, verdict.basis, verdict.reason
        lease = _lease(settings, clock())
        row.next_attempt_at = row.leased_until = lease
        return _Ready(row.id, lease, address, dumps_bytes(content.redacted(bundle, verdict)),
                      row.created_at, row.attempts)


def backoff(settings: Settings, attempts: int) -> float:
    """Seconds before the next try after `attempts` failed ones (with +-20 % jitter)."""
    delay = settings.delivery_first_retry * float(2 ** min(max(attempts - 1, 0), 40))
    return min(delay, MAX_BACKOFF) * random.uniform(0.8, 1.2)


def _record(db: Database, settings: Settings, ready: _Ready, outcome: Sent,
            clock: Clock, auditor: Auditor | None = None) -> Result:
    at = clock()
    with db.session(write=True) as session:
        if outcome.ok:
            # The receiver has it: recorded whoever holds the lease now.
            row = session.scalars(select(D).where(D.id == ready.id).with_for_update()
                                  ).one_or_none()
            if row is None or row.status in ("delivered", "acknowledged"):
                return "lost"
            if row.status != "queued":
                row.last_error = (f"It was {row.status} while an attempt was under way, which "
                                  f"the receiver accepted.")
            else:
                row.last_error = None
            row.status, row.delivered_at, row.next_attempt_at = "delivered", at, None
            row.leased_until = None
            row.attempts += 1
            expect_ack(session, settings, row.id, at)
            _audit(session, auditor, row, session.get_one(MessageRow, row.message_id),
                   f"Delivered by push to {without_credentials(ready.address)}. {row.reason}")
            return "delivered"
        row = _still_ours(session, _Claim(ready.id, ready.lease))
        if row is None:
            return "lost"
        row.attempts += 1
        row.last_error = outcome.error
        row.leased_until = None  # no longer under way
        deadline = row.created_at + timedelta(seconds=settings.delivery_max_age)
        message = session.get_one(MessageRow, row.message_id)
        if outcome.sent:  # the receiver was sent the message (or may have been): a disclosure
            _audit(session, auditor, row, message,
                   f"Pushed to {without_credentials(ready.address)} (attempt {row.attempts}), "
                   f"not taken: {outcome.error}. {row.reason}")
        result: Result
        if outcome.fatal or at >= deadline:
            if not outcome.fatal:
                row.last_error = (f"{outcome.error} (retried for {settings.delivery_max_age} s, "
                                  "giving up)")
            row.status, row.next_attempt_at = "dead-letter", None
            result, then = "dead-letter", "dead-lettered"
            record_step(session, auditor, row, message,
                        f"Dead-lettered after {row.attempts} attempt(s): {row.last_error}",
                        outcome="8")
        else:
            delay = (outcome.retry_after if outcome.retry_after is not None
                     else backoff(settings, row.attempts))
            row.next_attempt_at = min(at + timedelta(seconds=delay), deadline)
            result, then = "retry", f"next try at {format_instant(row.next_attempt_at)}"
        receiver, attempts = row.receiver_org, row.attempts
    # recorded (committed): the operator's line for each failed attempt
    log.warning("delivery %s to %s: attempt %d failed (%s); %s", ready.id, receiver, attempts,
                outcome.error, then)
    return result


def _record_taken(db: Database, settings: Settings, ready: _Ready, outcome: Sent,
                  clock: Clock, auditor: Auditor | None = None) -> Result:
    """Record the outcome. That the receiver took the message is recorded even if the
    database is away for a moment (a restart, a failover, a cut connection): tried again
    until the lease ends, since a delivery left queued is sent again once it has. A failure
    is recorded once; if that fails, the expiring lease brings the retry it would have."""
    give_up = time.monotonic() + (ready.lease - clock()).total_seconds()
    while True:
        try:
            return _record(db, settings, ready, outcome, clock, auditor)
        except (OperationalError, InterfaceError):
            if not outcome.ok or time.monotonic() + RECORD_RETRY >= give_up:
                raise
            log.warning("delivery %s was taken by its receiver; the database is away, "
                        "recording it again", ready.id)
            time.sleep(RECORD_RETRY)


def attempt(db: Database, settings: Settings, channel: OutboundChannel, c: _Claim,
            clock: Clock, auditor: Auditor | None = None) -> Result:
    """One attempt at one claimed delivery, through `channel` (the push adapter)."""
    ready = _prepare(db, settings, c, clock, auditor)
    if not isinstance(ready, _Ready):
        return ready
    outcome = channel.send(ready.address, ready.body, timeout=settings.delivery_timeout)
    return _record_taken(db, settings, ready, outcome, clock, auditor)


_TALLY = {"delivered": "delivered", "retry": "retried", "dead-letter": "dead_lettered",
          "withheld": "withheld", "pull-only": "pull_only", "lost": "lost"}


def sweep(db: Database, settings: Settings, *, now: datetime | None = None,
          transport: httpx.BaseTransport | None = None, client: httpx.Client | None = None,
          limit: int = BATCH, auditor: Auditor | None = None,
          channel: OutboundChannel | None = None) -> SweepReport:
    """One pass: publish, claim due deliveries, send them concurrently, record outcomes
    (with `auditor`, each push that reached its receiver and each send-time withholding is
    written to the audit trail in the same transaction).

    `now` pins the clock for due times, backoff and max age (tests). Deliveries go out
    through `channel` (an adapters.channels.OutboundChannel; default the FHIR push of
    adapters/fhir_push, on `client` or `transport` when given: tests inject
    httpx.MockTransport; the Dispatcher shares one)."""
    clock: Clock = (lambda: now) if now is not None else utcnow
    report = SweepReport(published=publish(db))
    claims = claim(db, settings, at=clock(), limit=limit)
    report.claimed = len(claims)
    if not claims:
        return report
    push = channel or push_channel(settings, client=client, transport=transport)
    try:
        with ThreadPoolExecutor(max_workers=len(claims),
                                thread_name_prefix="hub-delivery-send") as pool:
            futures = [pool.submit(attempt, db, settings, push, c, clock, auditor)
                       for c in claims]
            for future in futures:
                try:
                    result = future.result()
                except Exception as exc:  # a database hiccup: the lease expires, it is retried
                    log.exception("delivery attempt failed")
                    report.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                name = _TALLY[result]
                setattr(report, name, getattr(report, name) + 1)
    finally:
        if channel is None:
            push.close()
    return report


# --- the background dispatcher ----------------------------------------------------------------


class Dispatcher:
    """Delivers in the background: `threads` sweeper threads publish and claim every
    `settings.delivery_poll_interval` seconds, or sooner when an attempt ends while a
    receiver is at its cap (`_rest`); claims keep them apart. They hand each claimed
    delivery to one shared pool of `threads` x BATCH sender threads, without waiting for the
    attempts: a pass never waits for its slowest receiver, so a receiver that takes the whole
    timeout to answer holds up its own deliveries only, never another's accepted meanwhile.
    A sweeper claims no more than there are idle senders, so a claimed delivery starts at
    once and no lease runs out in a queue, and no more than settings.delivery_per_receiver
    in flight to one receiver, so a receiver that hangs with many deliveries due holds only
    that many senders. `stop()` lets the attempts under way finish (each is bounded by
    delivery_timeout)."""

    def __init__(self, db: Database, settings: Settings, *,
                 transport: httpx.BaseTransport | None = None, threads: int = 2,
                 auditor: Auditor | None = None) -> None:
        self.db = db
        self.auditor = auditor
        self.settings = settings
        self.threads = max(1, threads)
        self.senders = self.threads * BATCH
        self._transport = transport
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._channel: OutboundChannel | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._idle = 0  # senders free to take a claim
        self._under_way: Counter[str] = Counter()  # attempts in flight, by receiver
        self._claiming = threading.Lock()
        self._freed = threading.Event()  # a sender came free
        self._finished = threading.Event()  # an attempt to a receiver at its cap ended
        self.sweeps = 0
        self.failures = 0

    @property
    def running(self) -> bool:
        """True while sweeper threads are alive."""
        return any(t.is_alive() for t in self._workers)

    def start(self) -> Dispatcher:
        """Start the sweeper threads (once)."""
        if self._workers:
            raise RuntimeError("the dispatcher is already started")
        self._stop.clear()
        self._channel = push_channel(self.settings, transport=self._transport)
        self._pool = ThreadPoolExecutor(max_workers=self.senders,
                                        thread_name_prefix="hub-delivery-send")
        self._idle = self.senders
        self._workers = [threading.Thread(target=self._loop, name=f"hub-dispatcher-{n}",
                                          daemon=True) for n in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def _take(self) -> int:
        """Reserve the idle senders for one pass (at most BATCH); how many."""
        with self._lock:
            n = min(BATCH, self._idle)
            self._idle -= n
            if not self._idle:
                self._freed.clear()
            return n

    def _give(self, n: int) -> None:
        with self._lock:
            self._idle += n
            if n:
                self._freed.set()

    def _pass(self, limit: int) -> int:
        """Publish, claim up to `limit` and hand each claim to a sender; how many claimed."""
        assert self._pool is not None
        publish(self.db)
        with self._claiming:  # this process's sweepers count one cap per receiver together
            with self._lock:
                under_way = dict(self._under_way)
            claims = claim(self.db, self.settings, at=utcnow(), limit=limit,
                           under_way=under_way)
            with self._lock:
                self._under_way.update(c.receiver for c in claims)
        self._give(limit - len(claims))
        for c in claims:
            self._pool.submit(self._send, c)
        return len(claims)

    def _send(self, c: _Claim) -> None:
        assert self._channel is not None
        try:
            attempt(self.db, self.settings, self._channel, c, utcnow, self.auditor)
        except Exception:  # a database hiccup: the lease expires, it is retried
            with self._lock:
                self.failures += 1
            log.exception("delivery attempt failed")
        finally:
            with self._lock:
                was_full = self._under_way[c.receiver] >= self.settings.delivery_per_receiver
                self._under_way[c.receiver] -= 1
                if not self._under_way[c.receiver]:
                    del self._under_way[c.receiver]
            self._give(1)
            if was_full:  # its receiver has room again
                self._finished.set()

    def _rest(self) -> None:
        """Wait before the next pass: the poll interval, but only until an attempt to a
        receiver at its cap (HUB_DELIVERY_PER_RECEIVER) here ends, or not at all when one
        ended during the pass: that receiver's next due delivery has room now. Waiting the
        whole interval sent at most the cap a pass to a receiver with a backlog. After such
        a wake, COALESCE seconds more, so that one pass takes the room of the attempts that
        end together instead of a pass each (with a pass at every ending, the chaos run
        accepted a quarter fewer messages)."""
        with self._lock:
            capped = any(n >= self.settings.delivery_per_receiver
                         for n in self._under_way.values())
        if not (capped or self._finished.is_set()):
            self._stop.wait(self.settings.delivery_poll_interval)
        elif self._finished.wait(self.settings.delivery_poll_interval):
            self._stop.wait(COALESCE)

    def _loop(self) -> None:
        while not self._stop.is_set():
            limit = self._take()
            if not limit:  # every sender busy: wait for one (or the next poll)
                self._freed.wait(self.settings.delivery_poll_interval)
                continue
            claimed = 0
            self._finished.clear()  # an attempt that ends from here on wakes _rest
            try:
                claimed = self._pass(limit)
                self.sweeps += 1
            except Exception:
                self._give(limit)
                with self._lock:
                    self.failures += 1
                log.exception("delivery sweep failed; trying again")
            if claimed < limit:  # as many as it could take: more may be due at once
                self._rest()

    def stop(self, timeout: float | None = None) -> None:
        """Stop sweeping; wait for the threads and the attempts under way (at most `timeout`
        seconds each)."""
        self._stop.set()
        self._finished.set()
        wait = timeout if timeout is not None else self.settings.delivery_timeout * 2 + 5
        for worker in self._workers:
            worker.join(wait)
        self._workers = []
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __enter__(self) -> Dispatcher:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start_dispatcher(database: Database, settings: Settings,
                     auditor: Auditor | None = None) -> Dispatcher:
    """A started Dispatcher on the app's database (call `.stop()` on shutdown); with
    `auditor`, deliveries are written to the audit trail."""
    return Dispatcher(database, settings, auditor=auditor).start()
