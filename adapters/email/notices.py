"""The notice sweep: who should hear that something is pending, and the e-mail they get.

For each active coordinator with an e-mail address, what is pending for their organisation
is counted as the coordinators' home page counts it (hub.ui.transitions, read as that
person through the consent gate): overdue follow-up checks, dead letters, and requests
waiting for an answer (ready-for-discharge questions still requested, self-admission
requests). A notice goes out when something is pending, the counts differ from those of the
person's last notice, and the last notice is at least HUB_NOTIFY_INTERVAL old.

The e-mail holds counts and a link to /ui only: never a name, fødselsnummer, diagnosis or
free text (nothing a record says is copied into it).

Exactly one notice per person per interval, also with several hub processes: a notice is
claimed first (`notified_at` and the counts' digest set in a conditional UPDATE that only
one process wins), then sent. When the mail server fails, the claim is undone, so the
notice is sent by a later sweep: a failing server delays notices, loses none, and holds up
nothing else (each e-mail has its own timeout; the sweep runs on a thread of its own).
"""

from __future__ import annotations

import hashlib
import logging
import smtplib
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from adapters.email.smtp import Mailer
from hub.audit.recorder import take_disclosures
from hub.auth.subject import Subject
from hub.config import Settings
from hub.db.auth_models import UserRow
from hub.db.engine import Database
from hub.db.types import utcnow
from hub.ui.transitions import pending_transitions

log = logging.getLogger("adapters.email")
U = UserRow


@dataclass(frozen=True)
class Pending:
    """What is pending for one organisation, in counts only."""

    overdue: int
    dead_letters: int
    waiting: int

    @property
    def total(self) -> int:
        return self.overdue + self.dead_letters + self.waiting

    @property
    def digest(self) -> str:
        return hashlib.sha256(
            f"{self.overdue}/{self.dead_letters}/{self.waiting}".encode()).hexdigest()


@dataclass
class NotifyReport:
    """What one sweep did."""

    sent: int = 0
    failed: int = 0
    unchanged: int = 0  # nothing pending, nothing new, or notified within the interval


def pending_for(session: Session, username: str, organization_id: str,
                now: datetime) -> Pending:
    """The counts a coordinator's home page shows (read as that person)."""
    person = Subject("user", username, organization_id, role="coordinator")
    found = pending_transitions(session, person, now=now)
    take_disclosures(session)  # only counts leave; no record is disclosed by a notice
    waiting = len(found.self_admissions) + sum(d.status == "requested"
                                               for d in found.discharges)
    return Pending(found.overdue, len(found.dead_letters), waiting)


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def compose(pending: Pending, settings: Settings) -> tuple[str, str]:
    """Subject and text of a notice: counts and a link, nothing else."""
    lines = []
    if pending.overdue:
        checks = _plural(pending.overdue, "oppfølgingskontroll", "oppfølgingskontroller")
        lines.append(f"- {checks} på overtid")
    if pending.dead_letters:
        lines.append(f"- {_plural(pending.dead_letters, 'melding', 'meldinger')} som ikke "
                     "kunne leveres")
    if pending.waiting:
        lines.append(f"- {_plural(pending.waiting, 'forespørsel', 'forespørsler')} som venter "
                     "på svar")
    hours = settings.notify_interval / 3600
    every = f"{hours:g} time" if hours == 1 else f"{hours:g} timer"
    subject = f"CareHub: {_plural(pending.total, 'sak venter', 'saker venter')}"
    text = ("Hei,\n\nDette venter i CareHub for organisasjonen din:\n" + "\n".join(lines)
            + f"\n\nLogg inn for å se dem: {settings.base_url.rstrip('/')}/ui\n\n"
            "Denne e-posten inneholder ingen helseopplysninger. Du får høyst én slik "
            f"e-post per {every}.\n")
    return subject, text


def notify(db: Database, settings: Settings, mailer: Mailer, *,
           now: datetime | None = None) -> NotifyReport:
    """One sweep: a notice to each coordinator who is due one (see the module docstring)."""
    now = now or utcnow()
    report = NotifyReport()
    with db.session(write=False) as session:
        people = session.execute(
            select(U.id, U.username, U.organization_id, U.email, U.notified_at,
                   U.notified_digest)
            .where(U.active.is_(True), U.role == "coordinator", U.email.is_not(None),
                   U.organization_id.is_not(None))).all()
    since = now - timedelta(seconds=settings.notify_interval)
    for person in people:
        with db.session(write=False) as session:
            pending = pending_for(session, person.username, person.organization_id, now)
        if (not pending.total or pending.digest == person.notified_digest
                or (person.notified_at is not None and person.notified_at > since)):
            report.unchanged += 1
            continue
        if not _claim(db, person.id, pending.digest, now, since):
            report.unchanged += 1  # another process has just sent it
            continue
        subject, text = compose(pending, settings)
        try:
            mailer.send(person.email, subject, text)
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("notice to user %s not sent (%s); trying again next sweep",
                        person.id, type(exc).__name__)
            _unclaim(db, person.id, now, person.notified_at, person.notified_digest)
            report.failed += 1
            continue
        report.sent += 1
    return report


def _claim(db: Database, user_id: int, digest: str, now: datetime, since: datetime) -> bool:
    with db.session(write=True) as session:
        done = session.execute(
            update(U).where(U.id == user_id,
                            or_(U.notified_at.is_(None), U.notified_at <= since),
                            or_(U.notified_digest.is_(None), U.notified_digest != digest))
            .values(notified_at=now, notified_digest=digest))
        return bool(getattr(done, "rowcount", 0))


def _unclaim(db: Database, user_id: int, now: datetime, at: datetime | None,
             digest: str | None) -> None:
    with db.session(write=True) as session:
        session.execute(update(U).where(U.id == user_id, U.notified_at == now)
                        .values(notified_at=at, notified_digest=digest))


class Notifier:
    """Sweeps every `every` seconds on a thread of its own (started by `hub serve` when
    HUB_SMTP_URL is set)."""

    def __init__(self, db: Database, settings: Settings, mailer: Mailer, *,
                 every: float) -> None:
        self.db, self.settings, self.mailer, self.every = db, settings, mailer, every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Notifier:
        self._thread = threading.Thread(target=self._loop, name="hub-notifier", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                notify(self.db, self.settings, self.mailer)
            except Exception:
                log.exception("notice sweep failed; trying again")
            self._stop.wait(self.every)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
