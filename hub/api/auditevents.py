"""GET /fhir/AuditEvent (search) and /fhir/AuditEvent/{id} (read), for auditors only.

AuditEvents live in the audit trail (hub.audit), not in the resource store; these routes are
registered before the generic /fhir/{type} ones so they answer for the type. Only a signed-in
person with role auditor (the /ui session cookie reaches /fhir) may use them; everyone else,
clients whatever their scopes, gets 403. Reading the trail is itself recorded in it.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session

from hub.api.deps import (
    DatabaseDep,
    SettingsDep,
    SubjectDep,
    audited_transaction,
    settle_reads,
)
from hub.api.responses import FhirResponse, bundle
from hub.audit import queries
from hub.audit.recorder import Touched
from hub.auth.subject import Subject
from hub.errors import ForbiddenError, MethodNotAllowedError, NotFoundError

router = APIRouter()

AUDITOR = "auditor"


def require_auditor(subject: Subject) -> None:
    """Raise ForbiddenError unless `subject` is a person with role auditor."""
    if subject.kind != "user" or subject.role != AUDITOR:
        raise ForbiddenError("Only auditors read the audit trail (sign in at /ui with an "
                             "auditor account).")


def _touched(lines: list[queries.AuditLine]) -> Touched:
    """The records an auditor saw, by the patients they are about."""
    return Touched((), tuple(dict.fromkeys(ln.patient_ref for ln in lines if ln.patient_ref)))


def _page_link(base: str, query: queries.AuditQuery, after: int) -> str:
    pairs = [*query.pairs, ("_count", str(query.count))]
    if after:
        pairs.append(("_after", str(after)))
    return f"{base}/AuditEvent?{urlencode(pairs)}"


@router.get("/AuditEvent")
async def search(request: Request, db: DatabaseDep, settings: SettingsDep,
                 subject: SubjectDep) -> FhirResponse:
    """A searchset of AuditEvents (patient, date, agent, subtype, _count), oldest first; the
    page's records whose body cannot be read are one OperationOutcome entry (mode outcome).
    `_count=0`, `_total=accurate` and `_summary=count` give `total` (CONTRACT section 2)."""
    require_auditor(subject)
    pairs = list(request.query_params.multi_items())
    query = queries.parse_query(pairs, default_count=settings.page_size,
                                max_count=settings.max_page_size)
    await settle_reads(request)  # every read committed before this query is in the answer
    page = await audited_transaction(
        request, db, subject, lambda s: queries.search(s, query), interaction="search-type",
        resource_type="AuditEvent", query=request.url.query,
        touched=lambda _s, found: Touched(
            (), tuple(dict.fromkeys(p for ps in query.patients for p in ps)))
        + _touched(found.lines), reads_only=True)
    base = settings.fhir_base
    links = [("self", _page_link(base, query, query.after))]
    if page.next_after is not None:
        links.append(("next", _page_link(base, query, page.next_after)))
    entries = [{"fullUrl": f"{base}/AuditEvent/{ln.id}", "resource": ln.body,
                "search": {"mode": "match"}} for ln in page.lines if ln.body is not None]
    unreadable = [ln.issue() for ln in page.lines if ln.body is None]
    if unreadable:  # matched by its columns, but there is no AuditEvent to show: say so
        entries.append({"resource": {"resourceType": "OperationOutcome", "issue": unreadable},
                        "search": {"mode": "outcome"}})
    return FhirResponse(bundle("searchset", entries, links, page.total))


@router.get("/AuditEvent/{event_id}")
async def read(event_id: str, request: Request, db: DatabaseDep,
               subject: SubjectDep) -> FhirResponse:
    """One AuditEvent, as signed."""
    require_auditor(subject)
    def find(session: Session) -> queries.AuditLine:
        line = queries.read(session, event_id)
        if line is None:
            raise NotFoundError(f"AuditEvent/{event_id} is not known here.")
        return line

    await settle_reads(request)
    line = await audited_transaction(
        request, db, subject, find, interaction="read", resource_type="AuditEvent",
        touched=lambda _s, found: Touched(
            (f"AuditEvent/{event_id}",), (found.patient_ref,) if found.patient_ref else ()),
        reads_only=True)
    assert line.body is not None  # found by the id in its body
    return FhirResponse(line.body)


@router.api_route("/AuditEvent", methods=["POST", "PUT", "DELETE", "PATCH"],
                  include_in_schema=False)
@router.api_route("/AuditEvent/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
                  include_in_schema=False)
async def anything_else(subject: SubjectDep) -> FhirResponse:
    """The trail is append-only and written by the hub alone: 405 to auditors, 403 to others."""
    require_auditor(subject)
    raise MethodNotAllowedError("The audit trail is read-only: search it (GET /fhir/AuditEvent) "
                                "or read one event (GET /fhir/AuditEvent/<id>).",
                                headers={"Allow": "GET"})
