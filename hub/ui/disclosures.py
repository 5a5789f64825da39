"""The auditors' disclosure log (CONTRACT section 8): who received or read what about one
person, when, and on what basis; the person's consents as a timeline; the state of the trail.

Everything here is read from the audit trail's Privacy Disclosure records (one per decision of
the consent gate or of routing, hub.audit.events.disclosure_event) and from the store as the
hub (an auditor belongs to no organisation; the directory and the person's identity and
consents are what the log is about). The route records each view in the trail.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.audit import copies, events, verifications
from hub.audit.models import AuditRecordRow
from hub.audit.queries import read_body
from hub.audit.records import event_id_of
from hub.audit.verify import check_record
from hub.auth.subject import Subject
from hub.consent.gate import HOLDS_RECORDS, REPLY, TASK_PARTY, Gate
from hub.consent.policy import OWN_RECORDS
from hub.errors import BadRequestError, GoneError, NotFoundError
from hub.fhir.identifiers import (
    DNR_SYSTEM,
    FNR_SYSTEM,
    d_nummer_problem,
    fodselsnummer_problem,
)
from hub.fhir.urls import without_credentials
from hub.store import query as search_mod
from hub.store import service
from hub.store.resources import StoredResource
from hub.ui.i18n import N_

HUB = Subject.hub_itself()
INTERACTIONS = {"read": N_("Read"), "vread": N_("Read an earlier version"),
                "history-instance": N_("Read the history"), "search-type": N_("Search"),
                "create": N_("Created a Patient the hub already keeps"),
                "update": N_("Updated another organisation's record it is a party to"),
                "operation": N_("Operation"), "transaction": N_("Transaction"),
                "batch": N_("Batch"), "$process-message": N_("Message")}
"""How a recipient came to the records, in words (translated where shown)."""
CONSENT_STATUSES = {"active": N_("in force"), "inactive": N_("withdrawn"),
                    "draft": N_("draft"), "proposed": N_("proposed"),
                    "rejected": N_("rejected"), "entered-in-error": N_("entered in error")}
BASES = {HOLDS_RECORDS: N_("Holds records about the person"),
         TASK_PARTY: N_("A party to the task"),
         REPLY: N_("An answer to what the recipient sent"),
         OWN_RECORDS: N_("The recipient's own records")}
"""The bases that are rules of the hub (CONTRACT sections 3 and 5), not a Consent or a
statutory code, in words for the auditor (the code is shown beside them)."""
INNSYN_BASES = {HOLDS_RECORDS: N_("They hold records about you, so they may see who you are"),
                TASK_PARTY: N_("They take part in the task"),
                REPLY: N_("An answer to what they sent"),
                OWN_RECORDS: N_("It was their own information")}
"""The same, for the person's copy (innsyn)."""
LIMIT = 1000
"""At most this many of a person's newest disclosure records (that match the filters) are
shown on the log's page and in the innsyn copy, and checked for the trail's state; each says
so when there are more. The CSV and the FHIR Bundle exports hold them all."""
READS = frozenset({"read", "vread", "history-instance", "search-type", "operation",
                   "transaction", "batch", "create", "update"})
"""Interactions by which a recipient's own request was shown (or refused) the records: a
create of a Patient the hub keeps is answered with that Patient where the consent gate
permits (hub.store.service.kept_person); an update (PUT, PATCH) of another organisation's
record, which only a party to a Task may make (its status), is answered with the record."""
_R = AuditRecordRow


@dataclass(frozen=True)
class Person:
    """A person the hub keeps one Patient for."""

    id: str
    name: str
    birth_date: str
    number: str
    number_kind: str  # fødselsnummer | D-nummer | ""

    @property
    def masked(self) -> str:
        """The number as coordinators see it: `131169 *****`."""
        return mask(self.number)


def mask(number: str) -> str:
    """A fødselsnummer or D-nummer with its personal part hidden: `131169 *****`."""
    return f"{number[:6]} *****" if len(number) == 11 else ""


def person_of(body: Mapping[str, Any]) -> Person:
    """The identity shown of a Patient resource."""
    name = (body.get("name") or [{}])[0]
    full = f"{' '.join(name.get('given', []))} {name.get('family', '')}".strip()
    number, kind = "", ""
    for ident in body.get("identifier") or []:
        if not isinstance(ident, dict):
            continue
        if ident.get("system") == FNR_SYSTEM:
            number, kind = str(ident.get("value", "")), "fødselsnummer"
            break
        if ident.get("system") == DNR_SYSTEM:
            number, kind = str(ident.get("value", "")), "D-nummer"
    return Person(str(body.get("id")), full, str(body.get("birthDate") or ""), number, kind)


def find_people(session: Session, *, number: str = "", name: str = "",
                born: str = "") -> list[Person]:
    """The people with this fødselsnummer or D-nummer, or this name and birth date.
    Raises BadRequestError for a number with a wrong check digit or a search with neither."""
    number = "".join(number.split())
    if number:
        problem = fodselsnummer_problem(number)
        system = FNR_SYSTEM
        if problem is not None and d_nummer_problem(number) is None:
            problem, system = None, DNR_SYSTEM
        if problem is not None:
            raise BadRequestError(problem, expression="number")
        found = service.find_by_identifier(session, HUB, system=system, value=number,
                                           resource_types=frozenset({"Patient"}))
        return [person_of(p.body) for p in found if p.body is not None]
    if not (name.strip() and born.strip()):
        raise BadRequestError(
            N_("Give a fødselsnummer or D-nummer, or a name and a birth date."),
            expression="number")
    try:
        date.fromisoformat(born.strip())
    except ValueError:
        raise BadRequestError(N_("Give the birth date as a date."), expression="born") from None
    criteria = [("birthdate", born.strip())]
    criteria += [("name", part) for part in name.split()]
    request = search_mod.SearchRequest("Patient", criteria, count=50, sort=[])
    matches, _, _ = service.search(session, HUB, request=request)
    return [person_of(m.body) for m in matches if m.body is not None]


def read_person(session: Session, patient_id: str) -> Person:
    """The person of Patient/patient_id. Raises NotFoundError."""
    try:
        stored = service.read(session, HUB, resource_type="Patient", resource_id=patient_id)
    except GoneError:
        raise NotFoundError("No person is kept under this id.") from None
    if stored.body is None:
        raise NotFoundError("No person is kept under this id.")
    return person_of(stored.body)


def organization_names(session: Session) -> dict[str, str]:
    """`Organization/<id>` -> name, for every registered organisation."""
    request = search_mod.SearchRequest("Organization", [], count=1000, sort=["name"])
    matches, _, _ = service.search(session, HUB, request=request)
    return {f"Organization/{m.id}": str((m.body or {}).get("name") or m.id)
            for m in matches if m.body is not None}


# --- the log -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """What the auditor narrowed the log to (empty: everything)."""

    organization: str = ""  # Organization/<id>
    since: date | None = None
    until: date | None = None  # included
    decision: str = ""  # permit | deny

    @classmethod
    def parse(cls, organization: str, since: str, until: str, decision: str) -> Filters:
        """From the form's fields. Raises BadRequestError for a malformed date or decision."""
        try:
            first = date.fromisoformat(since) if since else None
            last = date.fromisoformat(until) if until else None
        except ValueError:
            raise BadRequestError(N_("Give the period as dates."), expression="from") from None
        if decision not in ("", "permit", "deny"):
            raise BadRequestError(N_("Choose a decision from the list."),
                                  expression="decision")
        return cls(organization, first, last, decision)


UNREADABLE = "unreadable"
"""The decision of a log line whose record cannot be read (its body is not an AuditEvent)."""


@dataclass(frozen=True)
class LogLine:
    """One disclosure decision about the person."""

    seq: int
    at: datetime
    recipient: str  # Organization/<id>
    recipient_name: str
    event: str  # a message-event code, when a message was routed
    interaction: str  # read, search-type, ...: when the recipient's request read the records
    resource_types: tuple[str, ...]
    resources: tuple[str, ...]
    decision: str  # permit | deny | permit-with-redaction | unreadable (UNREADABLE)
    basis: str  # Consent/<id>, a legal-basis code, or ""
    basis_version: str  # Consent/<id>/_history/<v> in force at the time, when known
    reason: str
    requested_by: str  # who asked (a client or person), "" for the hub's own work
    event_id: str
    reason_text: str = ""  # the reason with organisations named, for people

    @property
    def permitted(self) -> bool:
        """Whether the records went (or were shown) to the recipient."""
        return self.decision not in ("deny", UNREADABLE)

    @classmethod
    def of_unreadable(cls, seq: int, at: datetime, why: str) -> LogLine:
        """The line of a record whose body cannot be read: only when, and why (`reason`)."""
        return cls(seq, at, recipient="", recipient_name="", event="", interaction="",
                   resource_types=(), resources=(), decision=UNREADABLE, basis="",
                   basis_version="", reason=why, requested_by="", event_id="")

    @property
    def unreadable(self) -> bool:
        """A record whose body cannot be read: changed after it was written (`reason` says
        how; the trail's state on the page counts it among those that fail the check)."""
        return self.decision == UNREADABLE

    @property
    def is_read(self) -> bool:
        """A read by the recipient, rather than a message routed to it."""
        return not self.event and self.interaction in READS


def _details(body: Mapping[str, Any]) -> tuple[dict[str, str], list[str], str]:
    details: dict[str, str] = {}
    resources: list[str] = []
    recipient = ""
    for agent in body.get("agent", []):
        codes = {c.get("code") for c in (agent.get("type") or {}).get("coding", [])}
        ref = str((agent.get("who") or {}).get("reference", ""))
        if "110152" in codes and ref.startswith("Organization/"):
            recipient = ref
    for entity in body.get("entity", []):
        role = (entity.get("role") or {}).get("code")
        if role == "13":
            details = {str(d.get("type")): str(d.get("valueString", ""))
                       for d in entity.get("detail", []) if isinstance(d, dict)}
        elif role == "4":
            ref = str((entity.get("what") or {}).get("reference", ""))
            if ref:
                resources.append(ref)
    return details, resources, recipient


def _requested_by(body: Mapping[str, Any]) -> str:
    for agent in body.get("agent", []):
        who = agent.get("who") or {}
        ident = who.get("identifier") or {}
        if ident.get("system") == events.CLIENT_ID_SYSTEM:
            return f"system {ident.get('value')}"
        if ident.get("system") == events.USERNAME_SYSTEM:
            return str(ident.get("value"))
    return ""


@dataclass
class ConsentVersion:
    """One version of one of the person's consents, as the timeline shows it."""

    ref: str  # Consent/<id>
    version: int
    at: datetime
    status: str
    recorded_by: str  # the custodian organisation's name
    permits: list[str] = field(default_factory=list)  # organisation names
    denies: list[str] = field(default_factory=list)
    period: tuple[str, str] = ("", "")
    individual_plan: bool = False
    resource_types: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        """The id of its place on the page."""
        return f"{self.ref.replace('/', '-')}-v{self.version}"

    @property
    def versioned(self) -> str:
        """Consent/<id>/_history/<v>."""
        return f"{self.ref}/_history/{self.version}"


def _org_names(refs: Iterable[Any], names: Mapping[str, str]) -> list[str]:
    out = []
    for ref in refs:
        text = str((ref or {}).get("reference", "")) if isinstance(ref, dict) else ""
        if text:
            out.append(names.get(text, text))
    return out


def _actors(provision: Mapping[str, Any]) -> list[Any]:
    return [a.get("reference") for a in provision.get("actor", []) if isinstance(a, dict)]


def consent_timeline(session: Session, patient_id: str,
                     names: Mapping[str, str]) -> list[ConsentVersion]:
    """Every version of the person's consents, newest first."""
    out: list[ConsentVersion] = []
    for consent in Gate(session, HUB).consents_of(patient_id):
        versions, _ = service.history(session, HUB, resource_type="Consent",
                                      resource_id=str(consent["id"]), count=1000, offset=0)
        out.extend(_consent_version(v, names) for v in versions if v.body is not None)
    out.sort(key=lambda c: (c.at, c.version), reverse=True)
    return out


def _consent_version(v: StoredResource, names: Mapping[str, str]) -> ConsentVersion:
    body = v.body or {}
    provision = body.get("provision") or {}
    custodian = _org_names(body.get("organization", []), names)
    denies = [name for sub in provision.get("provision", []) if isinstance(sub, dict)
              and sub.get("type") == "deny" for name in _org_names(_actors(sub), names)]
    period = provision.get("period") or {}
    codes = {(c.get("system"), c.get("code")) for cat in body.get("category", [])
             for c in cat.get("coding", [])}
    types = [str(c.get("code")) for c in provision.get("class", []) if isinstance(c, dict)]
    return ConsentVersion(
        v.relative_url, v.version_id, v.last_updated_at, str(body.get("status", "")),
        ", ".join(custodian), _org_names(_actors(provision), names), denies,
        (str(period.get("start", ""))[:10], str(period.get("end", ""))[:10]),
        any(code == "individual-plan" for _, code in codes), types)


def _version_at(timeline: Sequence[ConsentVersion], ref: str, at: datetime) -> str:
    for version in timeline:  # newest first: the first at or before `at` was in force
        if version.ref == ref and version.at <= at:
            return version.versioned
    return ""


@dataclass(frozen=True)
class Lines:
    """The lines of the log that were read, and whether more match than were read."""

    lines: list[LogLine]
    cut: bool  # more records match: older ones were left out (at `limit`)
    limit: int | None
    total: int  # the person's disclosure records in all, whatever the filters


def disclosure_log(session: Session, patient_id: str, filters: Filters, *,
                   names: Mapping[str, str], timeline: Sequence[ConsentVersion],
                   zone: tzinfo, limit: int | None = LIMIT) -> Lines:
    """The person's disclosure decisions, newest first, narrowed by `filters` (dates are
    calendar days in `zone`): the newest `limit` lines that match (None: all of them), and
    whether older ones were left out."""
    about = (_R.patient_ref == f"Patient/{patient_id}", _R.subtype == events.DISCLOSE)
    total = int(session.scalar(select(func.count()).select_from(_R).where(*about)) or 0)
    stmt = select(_R).where(*about)
    if filters.since is not None:
        start = datetime.combine(filters.since, datetime.min.time(), zone)
        stmt = stmt.where(_R.recorded_at >= start)
    if filters.until is not None:
        end = datetime.combine(filters.until, datetime.max.time(), zone)
        stmt = stmt.where(_R.recorded_at <= end)
    lines: list[LogLine] = []
    rows = session.scalars(stmt.order_by(_R.recorded_at.desc(), _R.seq.desc())
                           .execution_options(yield_per=500))
    try:
        for row in rows:
            line = _line(row, filters, names, timeline)
            if line is None:
                continue
            if limit is not None and len(lines) >= limit:
                return Lines(lines, True, limit, total)
            lines.append(line)
    finally:
        rows.close()
    return Lines(lines, False, limit, total)


def _line(row: AuditRecordRow, filters: Filters, names: Mapping[str, str],
          timeline: Sequence[ConsentVersion]) -> LogLine | None:
    """The log line of one record, or None when the filters leave it out."""
    body, why = read_body(bytes(row.body))
    if body is None:  # changed after it was written: shown whatever the filters
        return LogLine.of_unreadable(row.seq, row.recorded_at, why)
    details, resources, recipient = _details(body)
    decision = details.get("decision", "deny")
    if filters.organization and recipient != filters.organization:
        return None
    if filters.decision == "permit" and decision == "deny":
        return None
    if filters.decision == "deny" and decision != "deny":
        return None
    basis = details.get("basis", "")
    reason = without_credentials(details.get("reason", ""))  # also what older records hold
    types = tuple(sorted({r.split("/", 1)[0] for r in resources} - {"Bundle"}))
    return LogLine(
        row.seq, row.recorded_at, recipient, names.get(recipient, recipient),
        details.get("event", ""), details.get("interaction", ""),
        types or (("Bundle",) if resources else ()), tuple(resources), decision, basis,
        _version_at(timeline, basis, row.recorded_at) if basis.startswith("Consent/")
        else "", reason, _requested_by(body), str(body.get("id", "")),
        readable(reason, names))


_REF = re.compile(r"\b(Organization|Consent)/([A-Za-z0-9\-.]{1,64})")


def readable(reason: str, names: Mapping[str, str]) -> str:
    """A recorded reason with organisations by name and consents without their ids."""
    def name(found: re.Match[str]) -> str:
        if found.group(1) == "Consent":
            return "the consent"
        return names.get(found.group(0), found.group(0))
    return _REF.sub(name, reason)


# --- the trail's state ---------------------------------------------------------------------


@dataclass(frozen=True)
class TrailState:
    """How far the records behind the log can be trusted."""

    records: int  # in the whole trail
    checked: int  # of this person's records, checked now
    broken: tuple[int, ...]  # seqs of those that failed
    checked_at: datetime
    last_verified_at: datetime | None = None  # the last `hub audit verify` of the whole trail
    last_verified_ok: bool = False
    last_verified_intact: int = 0
    last_verified_reason: str = ""
    total: int = 0  # the person's disclosure records in all (more than `checked`: cut)

    @property
    def cut(self) -> bool:
        """Whether only the newest of the person's records were checked."""
        return self.total > self.checked


def trail_state(session: Session, patient_id: str, keys: Mapping[str, Ed25519PublicKey],
                now: datetime) -> TrailState:
    """Check now the person's newest LIMIT disclosure records (hash, signature, search
    columns, and that none repeats another record's AuditEvent), with the outcome of the
    last `hub audit verify` of the whole trail."""
    total = session.scalar(select(func.count()).select_from(_R)) or 0
    about = (_R.patient_ref == f"Patient/{patient_id}", _R.subtype == events.DISCLOSE)
    theirs = int(session.scalar(select(func.count()).select_from(_R).where(*about)) or 0)
    rows = list(session.scalars(select(_R).where(*about)
                                .order_by(_R.recorded_at.desc(), _R.seq.desc()).limit(LIMIT)))
    # A byte copy of a genuine record passes its own checks; its AuditEvent id gives it away
    # (hub/audit/copies.py), read from the body, which the signature covers.
    held_by = {row.seq: event_id_of(bytes(row.body)) for row in rows}
    first = copies.holders(session.connection(), [e for e in held_by.values() if e])
    checked, broken = 0, []
    for row in rows:
        checked += 1
        holders = first.get(held_by[row.seq] or "", [])
        copied = bool(holders) and holders[0].seq != row.seq  # the first holds the original
        if copied or check_record(row, keys) is not None:
            broken.append(row.seq)
    last = verifications.latest(session)
    if last is None:
        return TrailState(int(total), checked, tuple(broken), now, total=theirs)
    return TrailState(int(total), checked, tuple(broken), now, last.verified_at, last.ok,
                      last.intact, last.reason, total=theirs)


# --- exports -------------------------------------------------------------------------------

CSV_HEADER = ("time_utc", "recipient", "recipient_name", "event", "interaction",
              "resource_types", "decision", "basis", "basis_version", "reason", "requested_by",
              "audit_event")


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet reads as the start of a formula (OWASP, CSV injection)."""


def csv_cell(value: str) -> str:
    """`value` as a CSV cell a spreadsheet shows as text: one starting like a formula gets a
    single quote in front (OWASP); the FHIR Bundle export keeps the value as recorded."""
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value


def as_csv(lines: Sequence[LogLine]) -> str:
    """The log as CSV (one row per decision, newest first, times in UTC); no cell starts
    like a spreadsheet formula (names and reasons come from outside: usernames,
    organisation names)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for ln in lines:
        writer.writerow([csv_cell(value) for value in (
            ln.at.isoformat(), ln.recipient, ln.recipient_name, ln.event, ln.interaction,
            " ".join(ln.resource_types), ln.decision, ln.basis, ln.basis_version, ln.reason,
            ln.requested_by, ln.event_id)])
    return out.getvalue()

