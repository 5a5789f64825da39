"""Push delivery to real receivers on loopback: retries, dead letters, order, consent."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import text

from hub.auth.subject import Subject
from hub.config import Settings
from hub.db.engine import Database
from hub.db.types import utcnow
from hub.delivery import service
from hub.delivery.dispatcher import CLAIM_LOCK, backoff, claim, publish, sweep
from hub.store import service as service_store
from tests.database_away import Connections
from tests.delivery.conftest import ReceiverFactory, sweep_until
from tests.delivery.factory import (
    accept,
    add_consent,
    add_org,
    add_patient,
    consent,
    deliveries,
    delivery,
    revoke_consent,
    set_endpoint_status,
)
from tests.delivery.receivers import Reply

SENDER = "sender"


def _all(db: Database, status: str) -> bool:
    return all(d.status == status for d in deliveries(db))


def test_receiver_down_for_a_while_then_back_gets_everything_once_in_order(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    r = receiver("time", up=False)
    add_org(database, SENDER)
    add_org(database, "time", r.url)
    patients = [add_patient(database, n) for n in range(3)]
    sent = [accept(database, fast, sender=SENDER, receivers=["time"], patient_id=p)
            for _ in range(3) for p in patients]
    heads = {s.deliveries["time"] for s in sent[:3]}
    sweep_until(database, fast, lambda: all(
        d.attempts >= 3 for d in deliveries(database) if d.id in heads),
        what="three failed attempts")
    for d in deliveries(database):
        assert d.status == "queued"
        if d.id in heads:  # connection refused, and retried
            assert d.last_error
            assert "ConnectError" in d.last_error
        else:  # a later message of the same patient waits for the first
            assert d.attempts == 0
    r.start()
    sweep_until(database, fast, lambda: _all(database, "delivered"))
    got = r.accepted_ids()
    assert Counter(got) == Counter(s.header_id for s in sent)  # each exactly once
    for n, _ in enumerate(patients):  # per patient in acceptance order
        mine = [s.header_id for s in sent[n::3]]
        assert [h for h in got if h in mine] == mine
    assert {g.content_type for g in r.accepted} == {"application/fhir+json"}


def test_5xx_is_retried_with_growing_backoff_until_200(
        database: Database, fast: Settings, receiver: ReceiverFactory,
        caplog: pytest.LogCaptureFixture) -> None:
    r = receiver("time")
    r.script.extend([Reply(500), Reply(503)])
    add_org(database, SENDER)
    add_org(database, "time", r.url)
    m = accept(database, fast, sender=SENDER, receivers=["time"], patient_id=add_patient(database))
    sweep_until(database, fast, lambda: _all(database, "delivered"))
    d = delivery(database, m.deliveries["time"])
    assert (d.status, d.attempts, d.last_error) == ("delivered", 3, None)
    assert d.delivered_at is not None
    assert r.requested_ids() == [m.header_id] * 3
    # each failed attempt is a line for the operator, after it is recorded; the success is not
    said = [r.getMessage() for r in caplog.records
            if r.name == "hub.delivery" and r.levelno == logging.WARNING]
    assert [line.split(" (")[0] for line in said] == [
        f"delivery {d.id} to time: attempt 1 failed", f"delivery {d.id} to time: attempt 2 failed"]
    assert "HTTP 500" in said[0]
    assert "HTTP 503" in said[1]
    assert all("; next try at 20" in line for line in said)
    assert r.accepted_ids() == [m.header_id]
    at = [g.at for g in r.requests]
    assert at[1] - at[0] >= 0.04  # first retry 0.05 s -20 %
    assert at[2] - at[1] >= 0.08  # then 0.1 s -20 %


def test_backoff_doubles_with_jitter_and_is_capped(fast: Settings) -> None:
    for attempts, base in ((1, 0.05), (2, 0.1), (3, 0.2), (6, 1.6)):
        for _ in range(50):
            assert base * 0.8 <= backoff(fast, attempts) <= base * 1.2
    assert backoff(fast, 200) <= 3600 * 1.2


def test_connection_refused_schedules_the_next_try_by_the_backoff(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    r = receiver("time", up=False)
    add_org(database, SENDER)
    add_org(database, "time", r.url)
    m = accept(database, fast, sender=SENDER, receivers=["time"], patient_id=add_patient(database))
    at = utcnow() + timedelta(seconds=1)
    for attempts, base in ((1, 0.05), (2, 0.1), (3, 0.2)):
        report = sweep(database, fast, now=at)
        assert report.retried == 1
        d = delivery(database, m.deliveries["time"])
        assert d.attempts == attempts
        assert d.status == "queued"
        assert d.last_error
        assert "ConnectError" in d.last_error
        assert d.next_attempt_at is not None
        wait = (d.next_attempt_at - at).total_seconds()
        assert base * 0.8 - 1e-6 <= wait <= base * 1.2 + 1e-6
        assert sweep(database, fast, now=at).claimed == 0  # not due before then
        at = d.next_attempt_at


def test_429_waits_as_long_as_retry_after_says(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    r = receiver("time")
    r.script.append(Reply(429, {"Retry-After": "1"}))
    add_org(database, SENDER)
    add_org(database, "time", r.url)
    m = accept(database, fast, sender=SENDER, receivers=["time"], patient_id=add_patient(database))
    before = utcnow()
    assert sweep(database, fast).retried == 1
    d = delivery(database, m.deliveries["time"])
    assert d.last_error
    assert "HTTP 429" in d.last_error
    assert d.next_attempt_at is not None
    assert (d.next_attempt_at - before).total_seconds() >= 1.0
    sweep_until(database, fast, lambda: _all(database, "delivered"))
    at = [g.at for g in r.requests]
    assert len(at) == 2
    assert at[1] - at[0] >= 1.0


def test_http_date_retry_after() -> None:
    from email.utils import format_datetime

    from adapters.fhir_push.push import retry_after as _retry_after

    now = utcnow()
    assert _retry_after("7", now) == 7.0
    when = format_datetime(now + timedelta(seconds=30), usegmt=True)
    value = _retry_after(when, now)
    assert value is not None
    assert 28 <= value <= 31
    assert _retry_after("soon", now) is None


def test_no_answer_within_the_timeout_is_retried(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    r = receiver("time")
    r.script.append(Reply(200, delay=2.0))  # answers long after the 0.5 s timeout
    add_org(database, SENDER)
    add_org(database, "time", r.url)
    m = accept(database, fast, sender=SENDER, receivers=["time"], patient_id=add_patient(database))
    assert sweep(database, fast).retried == 1
    # The attempt gave up at the timeout: its error says so (no wall-clock bound here; on a
    # busy machine the sweep around it may take longer than the receiver's delay).
    d = delivery(database, m.deliveries["time"])
    assert d.last_error
    assert "No answer within 0.5 s" in d.last_error
    sweep_until(database, fast, lambda: _all(database, "delivered"))
    assert delivery(database, m.deliveries["time"]).attempts == 2
    # The slow receiver took the first copy in as well: at least once, deduplicated by the
    # receiver on MessageHeader.id.
    assert r.accepted_ids() == [m.header_id] * 2


def test_4xx_is_a_dead_letter_at_once_and_replay_delivers_it(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    r = receiver("time")
    r.script.append(Reply(400))
    add_org(database, SENDER)
    add_org(database, "time", r.url)
    m = accept(database, fast, sender=SENDER, receivers=["time"], patient_id=add_patient(database))
    assert sweep(database, fast).dead_lettered == 1
    d = delivery(database, m.deliveries["time"])
    assert (d.status, d.attempts, d.next_attempt_at) == ("dead-letter", 1, None)
    assert d.last_error
    assert d.last_error.startswith("HTTP 400")
    for _ in range(3):
        sweep(database, fast)
    assert r.requested_ids() == [m.header_id]  # never sent again by itself
    with database.session(write=True) as s:
        replayed = service.replay(s, Subject.hub_itself(), message_header_id=m.header_id)
        assert [x.id for x in replayed] == [d.id]
    again = delivery(database, d.id)
    # a new round; the last error stays until the next attempt's outcome replaces it
    assert (again.status, again.attempts, again.last_error) == ("queued", 0, d.last_error)
    assert again.created_at > d.created_at  # a fresh max-age window
    sweep_until(database, fast, lambda: _all(database, "delivered"))
    assert r.accepted_ids() == [m.header_id]


def test_retried_until_max_age_then_dead_letter(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    r = receiver("time")
    r.reply = lambda _h: Reply(503)
    add_org(database, SENDER)
    add_org(database, "time", r.url)
    m = accept(database, fast, sender=SENDER, receivers=["time"], patient_id=add_patient(database))
    d = delivery(database, m.deliveries["time"])
    deadline = d.created_at + timedelta(seconds=fast.delivery_max_age)
    assert sweep(database, fast).retried == 1
    # just before the deadline: the next try is at the deadline, not later
    assert sweep(database, fast, now=deadline - timedelta(milliseconds=10)).retried == 1
    assert delivery(database, d.id).next_attempt_at == deadline
    assert sweep(database, fast, now=deadline).dead_lettered == 1
    dead = delivery(database, d.id)
    assert (dead.status, dead.attempts) == ("dead-letter", 3)
    assert dead.last_error
    assert "HTTP 503" in dead.last_error
    assert "giving up" in dead.last_error


def test_order_per_patient_and_receiver_without_head_of_line_blocking(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    a, b = receiver("a"), receiver("b")
    add_org(database, SENDER)
    add_org(database, "a", a.url)
    add_org(database, "b", b.url)
    p1, p2 = add_patient(database, 1), add_patient(database, 2)
    m1 = accept(database, fast, sender=SENDER, receivers=["a", "b"], patient_id=p1)
    m2 = accept(database, fast, sender=SENDER, receivers=["a", "b"], patient_id=p1)
    m3 = accept(database, fast, sender=SENDER, receivers=["a"], patient_id=p2)
    failing = {"on": True}
    a.reply = lambda h: Reply(500) if failing["on"] and h == m1.header_id else Reply(200)
    # a's failure with m1 holds back only m2 to a: b gets both, a gets the other patient's
    sweep_until(database, fast, lambda: len(b.accepted) == 2 and len(a.accepted) == 1
                and a.requested_ids().count(m1.header_id) >= 3)
    assert b.accepted_ids() == [m1.header_id, m2.header_id]
    assert a.accepted_ids() == [m3.header_id]
    assert m2.header_id not in a.requested_ids()
    failing["on"] = False
    sweep_until(database, fast, lambda: _all(database, "delivered"))
    assert a.accepted_ids() == [m3.header_id, m1.header_id, m2.header_id]


def test_a_slow_receiver_does_not_hold_up_another(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    slow, quick = receiver("slow"), receiver("quick")
    slow.reply = lambda _h: Reply(200, delay=2.0)
    add_org(database, SENDER)
    add_org(database, "slow", slow.url)
    add_org(database, "quick", quick.url)
    p = add_patient(database)
    accept(database, fast, sender=SENDER, receivers=["slow"], patient_id=p)
    m = accept(database, fast, sender=SENDER, receivers=["quick"], patient_id=p)
    report = sweep(database, fast)
    assert report.claimed == 2
    assert report.delivered == 1
    assert report.retried == 1
    assert quick.accepted_ids() == [m.header_id]
    # not after slow's attempt timed out (measured from slow's own arrival, so that the
    # machine's load, which delays both alike, does not count)
    assert quick.accepted[0].at - slow.requests[0].at < fast.delivery_timeout


def test_consent_revoked_between_acceptance_and_send_withholds(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    r = receiver("time")
    add_org(database, SENDER)
    add_org(database, "time", r.url)
    p = add_patient(database)
    cid = add_consent(database, p, "time")
    # no statutory basis: only the consent lets it go
    m = accept(database, fast, sender=SENDER, receivers=["time"], patient_id=p,
               event="follow-up-contact")
    assert delivery(database, m.deliveries["time"]).status == "queued"
    revoke_consent(database, cid, p, "time")
    assert sweep(database, fast).withheld == 1
    d = delivery(database, m.deliveries["time"])
    assert (d.status, d.decision, d.next_attempt_at) == ("withheld", "deny", None)
    assert d.reason.startswith("Withheld before sending:")
    for _ in range(3):
        sweep(database, fast)
    assert r.requests == []


def test_redacted_types_are_left_out_of_what_is_sent(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    r = receiver("time")
    add_org(database, SENDER)
    add_org(database, "time", r.url)
    p = add_patient(database)
    add_consent(database, p, "time")  # but no consent to make an individual plan
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan",
            "identifier": [{"system": "urn:test", "value": "plan-1"}],
            "category": [{"text": "individuell plan"}],
            "subject": {"reference": f"Patient/{p}"}}
    m = accept(database, fast, sender=SENDER, receivers=["time"], patient_id=p,
               event="discharge-notice", extra=[plan])
    assert delivery(database, m.deliveries["time"]).decision == "permit-with-redaction"
    sweep_until(database, fast, lambda: _all(database, "delivered"))
    types = [e["resource"]["resourceType"] for e in r.accepted[0].bundle["entry"]]
    assert types == ["MessageHeader", "Patient", "Encounter"]


def test_a_receiver_without_an_active_endpoint_is_not_pushed(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    r = receiver("klepp")
    add_org(database, SENDER)
    add_org(database, "time")  # no Endpoint at all
    add_org(database, "klepp", r.url)
    set_endpoint_status(database, "klepp", "off")
    p = add_patient(database)
    sent = [accept(database, fast, sender=SENDER, receivers=["time", "klepp"], patient_id=p)
            for _ in range(2)]
    reports = [sweep(database, fast) for _ in range(3)]
    assert sum(x.pull_only for x in reports) == 4
    for d in deliveries(database):
        assert (d.status, d.attempts, d.next_attempt_at) == ("queued", 0, None)
        assert d.published_at is not None  # there for the pull
    assert r.requests == []
    assert len(sent) == 2


def test_published_in_the_order_seen_and_later_ones_after(
        database: Database, fast: Settings) -> None:
    add_org(database, SENDER)
    add_org(database, "time")
    p = add_patient(database)
    for _ in range(3):
        accept(database, fast, sender=SENDER, receivers=["time"], patient_id=p)
    assert sweep(database, fast).published == 3
    first = deliveries(database)
    stamps = [d.published_at for d in first if d.published_at is not None]
    assert len(stamps) == 3
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == 3
    assert sweep(database, fast).published == 0  # once only
    accept(database, fast, sender=SENDER, receivers=["time"], patient_id=p)
    sweep(database, fast)
    later = deliveries(database)[-1].published_at
    assert later is not None
    assert all(later > s for s in stamps)


def test_a_consent_changed_message_reaches_whom_it_names_also_when_it_revokes(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    r = receiver("time")
    add_org(database, SENDER)
    add_org(database, "time", r.url)
    p = add_patient(database)
    ident = [{"system": "urn:test:consent", "value": "c-1"}]
    body = {**consent(p, "time"), "identifier": ident}
    with database.session(write=True) as s:
        stored = service_store.create(s, Subject.working_for("jaeren-dps", "test"),
                                      resource=body).stored
    assert stored.body is not None
    m = accept(database, fast, sender=SENDER, receivers=["time"], patient_id=p,
               event="consent-changed", extra=[body], focus_extra=True, consent=stored.body)
    # revoked after acceptance: the message about it still goes, the consent is its basis
    with database.session(write=True) as s:
        service_store.update(s, Subject.working_for("jaeren-dps", "test"), resource_type="Consent",
                             resource_id=stored.id,
                             resource={**body, "id": stored.id, "status": "inactive"})
    sweep_until(database, fast, lambda: _all(database, "delivered"))
    d = delivery(database, m.deliveries["time"])
    assert d.basis == f"Consent/{stored.id}"
    assert "revocation" in d.reason
    assert r.accepted_ids() == [m.header_id]


def test_a_consent_changed_message_whose_consent_is_not_found_keeps_its_decision(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    r = receiver("time")
    add_org(database, SENDER)
    add_org(database, "time", r.url)
    p = add_patient(database)
    stored = {**consent(p, "time"), "id": "not-stored"}
    m = accept(database, fast, sender=SENDER, receivers=["time"], patient_id=p,
               event="consent-changed", focus_extra=True, consent=stored,
               extra=[{**consent(p, "time"), "identifier": [{"value": "unknown"}]}])
    assert delivery(database, m.deliveries["time"]).decision == "permit"
    sweep_until(database, fast, lambda: _all(database, "delivered"))
    assert r.accepted_ids() == [m.header_id]


def test_a_delivery_taken_while_the_database_is_away_is_recorded_not_sent_again(
        database: Database, fast: Settings, receiver: ReceiverFactory, db_url: str) -> None:
    """The receiver takes the message; at that moment the database refuses connections and
    drops the open ones (as a PostgreSQL restart does), and is back a second later. The
    dispatcher records the delivery once it can, within its lease, instead of leaving it
    queued to be sent a second time when the lease runs out."""
    if database.dialect != "postgresql":
        pytest.skip("needs a database server whose connections can be cut")
    settings = fast.model_copy(update={"delivery_timeout": 2.0})  # a lease of 5 s
    connections = Connections(db_url)

    def take_and_cut(_header_id: str) -> Reply:
        connections.allow(False)
        threading.Timer(1.0, connections.allow, args=(True,)).start()
        return Reply(200)

    r = receiver("time")
    add_org(database, SENDER)
    add_org(database, "time", r.url)
    sent = accept(database, settings, sender=SENDER, receivers=["time"],
                  patient_id=add_patient(database))
    r.reply = take_and_cut
    try:
        report = sweep(database, settings)
        r.reply = lambda _h: Reply(200)
        assert report.delivered == 1, report
        assert report.errors == []
        assert delivery(database, sent.deliveries["time"]).status == "delivered"
        # Long after the lease: nothing is due, nothing is sent again.
        later = sweep(database, settings, now=utcnow() + timedelta(minutes=5))
        assert later.claimed == 0
        assert r.requested_ids() == [sent.header_id]
    finally:
        connections.close()


def test_a_claim_passes_over_a_receiver_with_its_cap_under_way(
        database: Database, fast: Settings) -> None:
    """HUB_DELIVERY_PER_RECEIVER: a receiver with that many attempts under way gets no more,
    even when its due deliveries are the oldest; one below it gets only what is left."""
    settings = fast.model_copy(update={"delivery_per_receiver": 3})
    add_org(database, SENDER)
    add_org(database, "a", "http://a.invalid/fhir")
    add_org(database, "b", "http://b.invalid/fhir")
    for n in range(6):  # a's first: the oldest due
        accept(database, settings, sender=SENDER, receivers=["a"],
               patient_id=add_patient(database, n))
    for n in range(6, 8):
        accept(database, settings, sender=SENDER, receivers=["b"],
               patient_id=add_patient(database, n))
    publish(database)
    at = utcnow() + timedelta(seconds=1)
    full = claim(database, settings, at=at, limit=4, under_way={"a": 3})
    assert [c.receiver for c in full] == ["b", "b"]
    room = claim(database, settings, at=at, limit=4, under_way={"a": 1})
    assert [c.receiver for c in room] == ["a", "a"]  # two more, up to the cap of three
    assert len(claim(database, settings, at=at, limit=16)) == 4  # uncapped: the rest of a's


def test_claims_that_count_leases_take_turns_across_processes(
        database: Database, fast: Settings) -> None:
    """Two dispatcher processes must not both fill the same gap under a receiver's cap: a
    claim that counts the leases waits while another claimer holds the claim lock (another
    process's transaction on the server). Control: an uncapped claim (`sweep`, the CLI)
    counts nothing and does not wait."""
    if database.dialect != "postgresql":
        pytest.skip("SQLite's write transaction is exclusive: claims take turns anyway")
    add_org(database, SENDER)
    add_org(database, "a", "http://a.invalid/fhir")
    for n in range(2):
        accept(database, fast, sender=SENDER, receivers=["a"],
               patient_id=add_patient(database, n))
    publish(database)
    at = utcnow() + timedelta(seconds=1)
    got: list[int] = []
    with database.engine.connect() as other:  # another process, mid-claim
        other.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLAIM_LOCK})
        capped = threading.Thread(target=lambda: got.append(
            len(claim(database, fast, at=at, limit=1, under_way={}))))
        capped.start()
        capped.join(1.0)
        assert capped.is_alive()  # waiting for the other claimer
        assert got == []
        assert len(claim(database, fast, at=at, limit=1)) == 1  # uncapped: no wait
        other.rollback()  # the other claim ends
        capped.join(10)
    assert got == [1]
