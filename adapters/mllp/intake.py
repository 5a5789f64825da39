"""One ADT message in, one ACK out: through the same service path as `$process-message`.

`Intake.handle(payload, peer)` (blocking; the server runs it on a worker thread):
1. MSH (no database): character set, type, control id; a problem is an AE naming the field.
2. The whole message parsed and checked (hub/fhir/identifiers for PID-3); AE on a problem.
3. In a read transaction: the sender by MSH-4 (HER-id or organisasjonsnummer of a registered
   organisation; unknown: AE naming MSH-4) and the receiver, the municipality registered with
   the kommunenummer of PID-11.9 (none: AE naming PID-11.9).
4. The FHIR message (adapters.mllp.bundle) checked like any message (`check_message`), then,
   in one write transaction, `process_message` acting for the sending organisation, and the
   audit records of it, exactly as the API's `$process-message` route writes them. Identity,
   ownership, the consent gate, routing, delivery and the timed checks are that path's.
5. The ACK: AA made from the stored response (a repeat of MSH-10 from the same facility is a
   repeat of the FHIR message, answered with the first response, so the same ACK); AE for a
   refusal (a 4xx of the API), with a failure record in the audit trail; AR when the database
   cannot be reached or the work failed for another reason (send again).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from adapters.mllp import ack, adt, bundle
from hub.audit.recorder import Auditor, Touched, take_disclosures
from hub.auth.subject import Subject
from hub.config import Settings
from hub.db.engine import Database
from hub.errors import ConflictError, HubError
from hub.fhir.identifiers import HERID_SYSTEM, KOMMUNENUMMER_SYSTEM, ORGNR_SYSTEM
from hub.messaging.intake import Outcome, check_message, process_message
from hub.store import service

log = logging.getLogger("adapters.mllp")
HUB = Subject.hub_itself()
KIND_SYSTEM = "http://carehub.example/fhir/CodeSystem/organization-kind"
OPERATION = "$process-message"
DIRECTORY_TTL = 5.0
"""Seconds a looked-up sender and receiver are remembered."""


@dataclass(frozen=True)
class Parties:
    """The organisations of one ADT message."""

    sender: str
    receiver: str


def subject_for(org_id: str, facility: str) -> Subject:
    """Who acts for an ADT message: the sending organisation's PAS (a client of it, with the
    write scopes a message needs; nothing else)."""
    return Subject("client", f"mllp:{facility}", org_id, frozenset({"system/*.write"}))


class Intake:
    """Turns frames into ACKs on one database (thread-safe: no state between messages)."""

    def __init__(self, database: Database, settings: Settings, auditor: Auditor, *,
                 directory_ttl: float = DIRECTORY_TTL) -> None:
        self.db = database
        self.settings = settings
        self.auditor = auditor
        self.zone = ZoneInfo(settings.timezone)
        self.directory_ttl = directory_ttl
        self._directory: dict[tuple[tuple[str, ...], str | None], tuple[float, Parties]] = {}
        self._lock = threading.Lock()

    def handle(self, payload: bytes, peer: str | None = None) -> bytes:
        """The ACK to one frame's payload. Never raises."""
        try:
            header = adt.read_header(payload)
        except adt.AdtError as problem:
            self._record_failure(None, problem.text, peer, adt.Header(), "AE")
            return ack.build(adt.Header(), ack.ERROR, text=problem.text,
                             location=problem.location, error_code=problem.code)
        try:
            return self._handle(header, payload, peer)
        except adt.AdtError as problem:
            if not problem.recorded:
                self._record_failure(None, problem.text, peer, header, "AE")
            return self._error(header, problem)
        except SQLAlchemyError as exc:
            log.warning("ADT %s not taken now: database error %s", header.control_id,
                        type(exc).__name__)
            return ack.build(header, ack.REJECTED, error_code=adt.INTERNAL,
                             text="The hub cannot reach its database now; send the message "
                                  "again later.")
        except Exception:
            log.exception("ADT %s failed", header.control_id)
            return ack.build(header, ack.REJECTED, error_code=adt.INTERNAL,
                             text="The hub could not take the message now; send it again "
                                  "later.")

    def _error(self, header: adt.Header, problem: adt.AdtError) -> bytes:
        return ack.build(header, ack.ERROR, text=problem.text, location=problem.location,
                         error_code=problem.code)

    def _handle(self, header: adt.Header, payload: bytes, peer: str | None) -> bytes:
        message = adt.parse(payload, header, self.zone)
        try:
            bundle.event_of(message)
        except ValueError:
            raise adt.AdtError("MSH-9", adt.UNSUPPORTED_EVENT,
                               f"ADT^{message.trigger} is not turned into a FHIR message by "
                               f"this hub; send one of {', '.join(adt.TRIGGERS)}.") from None
        parties = self._parties(message)
        fhir_message = bundle.message(message, sender=parties.sender,
                                      receiver=parties.receiver)
        subject = subject_for(parties.sender, header.facility_ids[0])
        try:
            checked = check_message(fhir_message)
            outcome = self._accept(subject, fhir_message, checked, peer, header)
        except HubError as exc:
            problem = _problem_of(exc, fhir_message)
            self._record_failure(subject, exc.diagnostics, peer, header, f"AE ({exc.status})")
            problem.recorded = True
            raise problem from None
        return _accepted_ack(header, outcome.response)

    def _accept(self, subject: Subject, fhir_message: dict[str, Any], checked: Any,
                peer: str | None, header: adt.Header) -> Outcome:
        with self.db.session(write=True) as session:
            outcome = process_message(session, subject, self.settings, bundle=fhir_message,
                                      checked=checked)
            self._audit(session, subject, outcome, peer, header)
            return outcome

    def _audit(self, session: Session, subject: Subject, outcome: Outcome, peer: str | None,
               header: adt.Header) -> None:
        touched = Touched(outcome.resources, outcome.patients)
        self.auditor.write(session, [
            *self.auditor.disclosure_entries(take_disclosures(session), subject=subject),
            *self.auditor.rest_entries(
                subject, interaction="operation", resource_type="Bundle", touched=touched,
                operation=OPERATION, address=peer,
                request=f"MLLP ADT^{header.trigger} {header.control_id}")])

    def _record_failure(self, subject: Subject | None, text: str, peer: str | None,
                        header: adt.Header, answer: str) -> None:
        """A refused message in the audit trail, in a transaction of its own (like a failed
        API request): who, if known (else anonymous), from where, what was said. Nothing of
        the message itself is kept. Never raises."""
        try:
            with self.db.session(write=True) as session:
                self.auditor.write(session, self.auditor.rest_entries(
                    subject, interaction="operation", resource_type="Bundle", outcome="4",
                    operation=OPERATION, address=peer, description=text,
                    request=f"MLLP ADT^{header.trigger or '?'} {header.control_id or '?'} "
                            f"from {header.sending_facility[:40] or '?'}: {answer}"))
        except Exception:
            log.exception("could not record a refused ADT message in the audit trail")

    def _parties(self, message: adt.Adt) -> Parties:
        """`parties`, remembered for `directory_ttl` seconds: a PAS sends about the same few
        organisations all day, and the directory changes seldom (a disabled organisation
        is refused at most that long after `hub org disable`)."""
        key = (tuple(message.header.facility_ids), message.person.kommunenummer)
        now = time.monotonic()
        with self._lock:
            hit = self._directory.get(key)
        if hit is not None and now - hit[0] < self.directory_ttl:
            return hit[1]
        with self.db.session(write=False) as session:
            found = self.parties(session, message)
        with self._lock:
            if len(self._directory) > 10_000:
                self._directory.clear()
            self._directory[key] = (now, found)
        return found

    def parties(self, session: Session, message: adt.Adt) -> Parties:
        """The sender (MSH-4) and the receiving municipality (PID-11.9); both must be
        registered and active. Raises AdtError."""
        sender = None
        for value in message.header.facility_ids:
            for system in (HERID_SYSTEM, ORGNR_SYSTEM):
                found = service.match(session, HUB, resource_type="Organization",
                                      criteria=f"identifier={system}|{value}", limit=1)
                if found:
                    sender = found[0].logical_id
                    break
            if sender:
                break
        if sender is None:
            shown = message.header.sending_facility[:40] or "(empty)"
            raise adt.AdtError("MSH-4", adt.UNKNOWN_KEY,
                              f"Sending facility {shown} is not a registered organisation "
                              "(its HER-id or organisasjonsnummer, as given to hub org add).")
        if not _active(session, sender):
            raise adt.AdtError("MSH-4", adt.UNKNOWN_KEY,
                               f"Organization/{sender} (MSH-4) is disabled in the hub.")
        kommune = message.person.kommunenummer
        if not kommune:
            raise adt.AdtError("PID-11.9", adt.REQUIRED_MISSING,
                              "PID-11.9 (county/parish code) is empty: the hub finds the "
                              "receiving municipality by the patient's kommunenummer.")
        found = service.match(
            session, HUB, resource_type="Organization", limit=1,
            criteria=f"identifier={KOMMUNENUMMER_SYSTEM}|{kommune}"
                     f"&type={KIND_SYSTEM}|municipality")
        if not found:
            raise adt.AdtError("PID-11.9", adt.UNKNOWN_KEY,
                              f"No municipality with kommunenummer {kommune} is registered.")
        return Parties(sender, found[0].logical_id)


def _active(session: Session, org_id: str) -> bool:
    body = service.read(session, HUB, resource_type="Organization", resource_id=org_id).body
    return bool(body) and (body or {}).get("active", True) is not False


def _problem_of(exc: HubError, fhir_message: dict[str, Any]) -> adt.AdtError:
    """A refusal of the service path as the ADT field it concerns: the first error whose
    element a field filled (ERR-2), with the HL7 table 0357 code of its kind (ERR-3);
    MSH-9 and 207 for a refusal no field explains."""
    if isinstance(exc, ConflictError):
        return adt.AdtError("MSH-10", adt.DUPLICATE_KEY,
                           "MSH-10 was already used by this facility for a different message; "
                           "give a new message a new control id.")
    for issue in exc.issues:
        field = _field_of(issue.expression or "", fhir_message)
        if field is not None and issue.severity in ("error", "fatal"):
            return adt.AdtError(field, _ISSUE_CODES.get(issue.code, adt.DATA_TYPE_ERROR),
                                exc.diagnostics)
    return adt.AdtError("MSH-9", adt.INTERNAL, exc.diagnostics)


def _field_of(expression: str, fhir_message: dict[str, Any]) -> str | None:
    """The ADT field that filled the element `expression` names ("Bundle.entry[2].resource.
    identifier[0].value", as validation names it, or "Encounter.identifier[0].value"), by
    the resource's type; None for an element no field filled."""
    entry = _ENTRY_PATH.match(expression)
    if entry is not None:
        entries = fhir_message.get("entry", [])
        index = int(entry["index"])
        resource = entries[index].get("resource", {}) if index < len(entries) else {}
        resource_type, path = str(resource.get("resourceType", "")), entry["path"]
    else:
        resource_type, _, path = expression.partition(".")
    path = _INDEXES.sub("", path)
    for (kind, prefix), field in _FIELDS:
        if kind == resource_type and (path == prefix or path.startswith(prefix + ".")):
            return field
    return None


_ENTRY_PATH = re.compile(r"Bundle\.entry\[(?P<index>\d+)\]\.resource\.(?P<path>.*)\Z")
_INDEXES = re.compile(r"\[\d+\]")
# Where an element of the FHIR message built from an ADT came from (adapters/mllp/bundle.py),
# the more exact first.
_FIELDS = (
    (("Patient", "identifier"), "PID-3"), (("Patient", "name.family"), "PID-5.1"),
    (("Patient", "name.given"), "PID-5.2"), (("Patient", "name"), "PID-5"),
    (("Patient", "birthDate"), "PID-7"), (("Patient", "gender"), "PID-8"),
    (("Patient", "address.line"), "PID-11.1"), (("Patient", "address.city"), "PID-11.3"),
    (("Patient", "address.postalCode"), "PID-11.5"),
    (("Patient", "address.district"), "PID-11.9"), (("Patient", "address"), "PID-11"),
    (("Encounter", "identifier"), "PV1-19"), (("Encounter", "period.start"), "PV1-44"),
    (("Encounter", "period.end"), "PV1-45"), (("CarePlan", "identifier"), "PV1-19"),
    (("CarePlan", "activity.detail.scheduledPeriod"), "PV1-45"),
)
# An OperationOutcome issue's code as HL7 table 0357's; any other issue about a field's
# value is a data type error.
_ISSUE_CODES = {"required": adt.REQUIRED_MISSING, "code-invalid": adt.TABLE_VALUE}


def _accepted_ack(header: adt.Header, response: dict[str, Any]) -> bytes:
    """AA from the stored response message: the same response gives the same ACK."""
    entries = response.get("entry") or []
    issues: list[dict[str, Any]] = []
    if len(entries) > 1:
        issues = (entries[1].get("resource") or {}).get("issue") or []
    said = [str(i.get("diagnostics", "")) for i in issues]
    queued = len([d for d in said if d.startswith("Queued")])
    withheld = len([d for d in said if d.startswith("Withheld")])
    text = f"Accepted: {queued} queued, {withheld} withheld."
    at = datetime.fromisoformat(str(response.get("timestamp")))
    control = str(response.get("id", "")).replace("-", "")[:20] or None
    return ack.build(header, ack.ACCEPTED, text=text, control_id=control, at=at)
