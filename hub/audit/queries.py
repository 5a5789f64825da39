"""Reading the audit trail for auditors: GET /fhir/AuditEvent and the /ui/audit page.

Search runs on the records' columns (patient_ref, recorded_at, agent, subtype), oldest first
by the time recorded (then seq), paged by keyset (`_after` = the last seq of the previous
page; its time is looked up). Not by seq alone: the records of reads are recorded when the
read happens but enter audit_records later, moved from their spool (hub/audit/spool.py).
The bodies are the signed AuditEvents exactly as stored. A body that does not read as a JSON
object (edited in the database: `hub audit verify` names such a record) is not dropped and
does not fail the page: its line has no body and says why (`unreadable`), and the auditor's
views show it as a record that cannot be read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from hub.audit.models import AuditRecordRow
from hub.errors import BadRequestError
from hub.fhir.validation import ID_RE
from hub.store.dates import parse_range
from hub.store.query import refuse_control_characters

PARAMS = ("_id", "patient", "date", "agent", "subtype", "_count", "_total", "_summary",
          "_after", "_format")
_DATE_PREFIXES = ("eq", "ge", "gt", "le", "lt")
_R = AuditRecordRow


@dataclass(frozen=True)
class AuditQuery:
    """A parsed search: each tuple is OR'd within, the parts AND'ed."""

    patients: tuple[tuple[str, ...], ...] = ()
    dates: tuple[tuple[str, datetime], ...] = ()  # (op, instant): op in > >= < <=
    agents: tuple[tuple[str, ...], ...] = ()
    subtypes: tuple[tuple[str, ...], ...] = ()
    count: int = 20
    after: int = 0
    pairs: tuple[tuple[str, str], ...] = field(default=())  # as given, for paging links
    ids: tuple[tuple[str, ...], ...] = ()  # AuditEvent ids (`_id`)
    total: bool = False  # `_total=accurate|estimate`, `_summary=count`: count the matches


@dataclass(frozen=True)
class AuditLine:
    """One record of the trail."""

    seq: int
    recorded_at: datetime
    patient_ref: str | None
    agent: str
    action: str
    subtype: str
    body: dict[str, Any] | None  # None: the stored body does not read as an AuditEvent
    unreadable: str = ""  # why not, when body is None

    @property
    def id(self) -> str:
        """The AuditEvent's id ("" for a body that cannot be read)."""
        return str(self.body.get("id", "")) if self.body is not None else ""

    @property
    def outcome(self) -> str:
        """The AuditEvent's outcome code: 0 success, 4 minor, 8 serious, 12 major failure."""
        return str(self.body.get("outcome", "")) if self.body is not None else ""

    @property
    def outcome_text(self) -> str:
        """The outcome in words (outcomeDesc where there is one)."""
        if self.body is None:
            return "unknown: the record cannot be read"
        words = {"0": "success", "4": "failure", "8": "serious failure",
                 "12": "major failure"}.get(self.outcome, self.outcome)
        desc = self.body.get("outcomeDesc")
        return f"{words}: {desc}" if desc and self.outcome != "0" else words

    def issue(self) -> dict[str, Any]:
        """An OperationOutcome issue that shows this unreadable record to an auditor."""
        about = f", about {self.patient_ref}" if self.patient_ref else ""
        return {"severity": "error", "code": "processing",
                "diagnostics": (
                    f"Audit record {self.seq} (recorded {self.recorded_at.isoformat()}, "
                    f"{self.subtype} by {self.agent}{about}) cannot be read: {self.unreadable}. "
                    "It was changed after it was written; `hub audit verify` names it.")}


@dataclass(frozen=True)
class AuditPage:
    """One page of records, and the cursor of the next page (None: this was the last)."""

    lines: list[AuditLine]
    next_after: int | None
    total: int | None = None  # every match, when the search asked for it (or `_count=0`)


def patient_ref(value: str) -> str:
    """`Patient/<id>` from `Patient/<id>`, `<id>` or an absolute URL ending in Patient/<id>."""
    parts = value.strip().rstrip("/").split("/")
    rid = parts[-1]
    if len(parts) >= 2 and parts[-2] != "Patient":
        raise BadRequestError(f"patient={value}: give a Patient reference (Patient/<id>).",
                              expression="patient")
    if not ID_RE.match(rid):
        raise BadRequestError(f"patient={value}: '{rid}' is not a FHIR id.",
                              expression="patient")
    return f"Patient/{rid}"


def _date(value: str) -> list[tuple[str, datetime]]:
    prefix = value[:2] if value[:2] in _DATE_PREFIXES else "eq"
    rest = value[2:] if value[:2] in _DATE_PREFIXES else value
    span = parse_range(rest)
    if span is None:
        raise BadRequestError(
            f"date={value}: give a date, dateTime or instant (e.g. ge2026-01-31, "
            "lt2026-02-01T12:00:00Z), optionally prefixed by eq, ge, gt, le or lt.",
            expression="date")
    low, high = span
    return {"eq": [(">=", low), ("<=", high)], "ge": [(">=", low)], "gt": [(">", high)],
            "le": [("<=", high)], "lt": [("<", low)]}[prefix]


def _count(value: str, max_count: int) -> int:
    if not value.isdigit():
        raise BadRequestError(f"_count={value}: give a whole number (0: only the total).",
                              expression="_count")
    return min(int(value), max_count)


def parse_query(pairs: Sequence[tuple[str, str]], *, default_count: int,
                max_count: int) -> AuditQuery:
    """The search of these query pairs. Raises BadRequestError for an unsupported parameter
    (an auditor's typo must not silently widen the search) or a malformed value."""
    ids, patients, dates, agents, subtypes = [], [], [], [], []
    count, after = min(default_count, max_count), 0
    total = summary = False
    for raw_name, value in pairs:
        refuse_control_characters(raw_name, value)
        name = raw_name.strip()
        if name not in PARAMS:
            raise BadRequestError(
                f"AuditEvent search does not support '{raw_name}'; use "
                f"{', '.join(p for p in PARAMS if p != '_format')}.", expression=raw_name)
        values = [v.strip() for v in value.split(",") if v.strip()]
        if name == "_format":
            continue
        if name == "_count":
            count = _count(value.strip(), max_count)
        elif name == "_total":
            if value.strip() not in ("none", "estimate", "accurate"):
                raise BadRequestError(f"_total={value}: give none, estimate or accurate.",
                                      expression="_total")
            total = value.strip() != "none"
        elif name == "_summary":
            if value.strip() not in ("count", "false"):
                raise BadRequestError(f"_summary={value}: AuditEvent search supports "
                                      "_summary=count (and false).", expression="_summary")
            summary = value.strip() == "count"
        elif name == "_after":
            cursor = value.strip()
            # ASCII only ("²".isdigit() holds), and within the seq column's 64 bits: the
            # driver refused a larger one with a 500
            if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 19 \
                    or int(cursor) > 2**63 - 1:
                raise BadRequestError(f"_after={value[:40]}: not a paging cursor.",
                                      expression="_after")
            after = int(value.strip())
        elif not values:
            raise BadRequestError(f"{name} needs a value.", expression=name)
        elif name == "_id":
            if bad := next((v for v in values if not ID_RE.match(v)), None):
                raise BadRequestError(f"_id={bad[:100]}: '{bad[:100]}' is not a FHIR id.",
                                      expression="_id")
            ids.append(tuple(values))
        elif name == "patient":
            patients.append(tuple(patient_ref(v) for v in values))
        elif name == "date":
            dates.extend(_date(value.strip()))
        elif name == "agent":
            agents.append(tuple(values))
        else:
            subtypes.append(tuple(v.rsplit("|", 1)[-1] for v in values))
    kept = tuple((k, v) for k, v in pairs if k not in ("_after", "_count", "_format"))
    if summary:  # only the total, no entries
        count, total = 0, True
    return AuditQuery(tuple(patients), tuple(dates), tuple(agents), tuple(subtypes), count,
                      after, kept, tuple(ids), total or count == 0)


def _agent_matches(value: str) -> ColumnElement[bool]:
    if "/" in value:
        return _R.agent == value
    return or_(_R.agent == value, _R.agent.endswith(f"/{value}", autoescape=True))


def _line(row: AuditRecordRow) -> AuditLine:
    body, why = read_body(bytes(row.body))
    return AuditLine(row.seq, row.recorded_at, row.patient_ref, row.agent, row.action,
                     row.subtype, body, why)


def read_body(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """A stored audit body as the AuditEvent it holds, or (None, why it cannot be read)."""
    try:
        body = json.loads(raw)
    except UnicodeDecodeError:
        return None, "its body is not UTF-8 text"
    except ValueError:
        return None, "its body is not JSON"
    if not isinstance(body, dict) or body.get("resourceType") != "AuditEvent":
        return None, "its body is not an AuditEvent"
    return body, ""


def search(session: Session, query: AuditQuery) -> AuditPage:
    """One page of the records matching `query`, oldest first, with the number of all the
    matches when the query asks for it (`total`). `_id` is an index search on the event_id
    column, and the body decides, as for a read: a record whose column was edited to one of
    the ids is left out (so a page may hold fewer than `count`; the total counts by the
    columns)."""
    matching = _matching(query)
    total = (int(session.scalar(select(func.count()).select_from(matching.subquery())) or 0)
             if query.total else None)
    if query.count == 0:
        return AuditPage([], None, total)
    stmt = matching
    if query.after:
        at = session.scalar(select(_R.recorded_at).where(_R.seq == query.after))
        stmt = stmt.where(_R.seq > query.after) if at is None else stmt.where(or_(
            _R.recorded_at > at, and_(_R.recorded_at == at, _R.seq > query.after)))
    rows = list(session.scalars(stmt.order_by(_R.recorded_at, _R.seq).limit(query.count + 1)))
    page = rows[:query.count]
    lines = [line for line in map(_line, page) if all(line.id in ids for ids in query.ids)]
    more = len(rows) > query.count
    return AuditPage(lines, page[-1].seq if more and page else None, total)


def _matching(query: AuditQuery) -> Select[AuditRecordRow]:
    """The records `query` matches by their columns (whatever page)."""
    stmt = select(_R)
    for ids in query.ids:
        stmt = stmt.where(_R.event_id.in_(ids))
    for patients in query.patients:
        stmt = stmt.where(_R.patient_ref.in_(patients))
    for op, at in query.dates:
        column = _R.recorded_at
        stmt = stmt.where({">": column > at, ">=": column >= at, "<": column < at,
                           "<=": column <= at}[op])
    for agents in query.agents:
        stmt = stmt.where(or_(*(_agent_matches(a) for a in agents)))
    for subtypes in query.subtypes:
        stmt = stmt.where(_R.subtype.in_(subtypes))
    return stmt


def read(session: Session, event_id: str) -> AuditLine | None:
    """The record whose AuditEvent has this id, or None: an index search on the event_id
    column (migration 0014), then the body's own id must agree, so an edited column gives
    None rather than another record (and `hub audit verify` names the edit)."""
    if not ID_RE.match(event_id):
        return None
    for row in session.scalars(select(_R).where(_R.event_id == event_id).order_by(_R.seq)):
        line = _line(row)
        if line.id == event_id:
            return line
    return None
