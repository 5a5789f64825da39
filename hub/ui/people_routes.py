"""The /ui pages about one person: the auditors' disclosure log (find, log, exports, the
printable innsyn copy) and the coordinators' person page. Each view is recorded in the audit
trail with the person it was about."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from hub.api.auditevents import require_auditor
from hub.api.deps import (
    DatabaseDep,
    SettingsDep,
    audited_transaction,
    get_auditor,
    settle_reads,
)
from hub.audit.recorder import Touched
from hub.auth.subject import Subject
from hub.consent.trail import consent_trail
from hub.db.types import utcnow
from hub.errors import BadRequestError, ForbiddenError, NotFoundError
from hub.fhir.validation import ID_RE
from hub.ui import disclosures, person
from hub.ui.i18n import Language
from hub.ui.pages import SECURITY_HEADERS, UIRoute, language_of, render
from hub.ui.sessions import SignedIn, SignedInDep

router = APIRouter(prefix="/ui", route_class=UIRoute, include_in_schema=False)


def _person_id(patient_id: str) -> str:
    """`patient_id` from the URL, when it can be a Patient's id; else the page is a 404. A
    comma would make the pages' `_id` searches an OR of two people (probe F, session 23),
    and a quote would end the CSV's file name."""
    if not ID_RE.match(patient_id):
        raise NotFoundError("No person is kept under this id.")
    return patient_id


def _patient(patient_id: str) -> Touched:
    return Touched((f"Patient/{patient_id}",), (f"Patient/{patient_id}",))


@router.get("/audit/people")
async def find_person(request: Request, signed_in: SignedInDep, db: DatabaseDep) -> Response:
    """Find a person by fødselsnummer or D-nummer, or by name and birth date (auditors); one
    match by number goes straight to their disclosure log."""
    subject = signed_in.subject
    require_auditor(subject)
    form = {k: request.query_params.get(k, "").strip() for k in ("number", "name", "born")}
    error, found = None, None
    if any(form.values()):
        query = urlencode({k: v for k, v in form.items() if v})
        try:
            found = await audited_transaction(
                request, db, subject,
                lambda s: disclosures.find_people(s, number=form["number"], name=form["name"],
                                                  born=form["born"]),
                interaction="search-type", resource_type="Patient", query=query,
                touched=lambda _s, people: Touched((), tuple(f"Patient/{p.id}"
                                                             for p in people)),
                reads_only=True)
        except BadRequestError as exc:
            error = exc.diagnostics
        if found is not None and len(found) == 1 and form["number"]:
            return RedirectResponse(f"/ui/audit/people/{found[0].id}", status_code=303)
    return render(request, "find_person.html", {
        "me": signed_in, "csrf_token": signed_in.csrf_token, "form": form, "error": error,
        "found": found}, status_code=400 if error else 200)


@dataclass(frozen=True)
class _Log:
    person: disclosures.Person
    read: disclosures.Lines
    timeline: list[disclosures.ConsentVersion]
    names: dict[str, str]
    state: disclosures.TrailState | None

    @property
    def lines(self) -> list[disclosures.LogLine]:
        """The lines shown (the newest, when `read.cut`)."""
        return self.read.lines


def _load_log(request: Request, session: Session, patient_id: str,
              filters: disclosures.Filters, language: Language, *, check: bool,
              limit: int | None) -> _Log:
    who = disclosures.read_person(session, patient_id)
    names = disclosures.organization_names(session)
    timeline = disclosures.consent_timeline(session, patient_id, names)
    lines = disclosures.disclosure_log(session, patient_id, filters, names=names,
                                       timeline=timeline, zone=language.zone, limit=limit)
    state = None
    if check:
        signer = get_auditor(request).signer
        state = disclosures.trail_state(session, patient_id,
                                        {signer.key_id: signer.public_key}, utcnow())
    return _Log(who, lines, timeline, names, state)


async def _log(request: Request, signed_in: SignedIn, db: Any, patient_id: str, *,
               check: bool, filtered: bool = True,
               complete: bool = False) -> tuple[_Log, dict[str, str]]:
    subject = signed_in.subject
    require_auditor(subject)
    patient_id = _person_id(patient_id)
    form = {k: request.query_params.get(k, "").strip()
            for k in ("organization", "from", "to", "decision")}
    filters = (disclosures.Filters.parse(form["organization"], form["from"], form["to"],
                                         form["decision"])
               if filtered else disclosures.Filters())
    language = language_of(request)
    await settle_reads(request)  # reads committed so far are in the log
    log = await audited_transaction(
        request, db, subject,
        lambda s: _load_log(request, s, patient_id, filters, language, check=check,
                            limit=None if complete else disclosures.LIMIT),
        interaction="search-type", resource_type="AuditEvent",
        query=urlencode({"patient": f"Patient/{patient_id}", "subtype": "disclose",
                         **{k: v for k, v in form.items() if v}}),
        touched=lambda _s, _r: _patient(patient_id), reads_only=True)
    return log, form


@router.get("/audit/people/{patient_id}")
async def disclosure_log(patient_id: str, request: Request, signed_in: SignedInDep,
                         db: DatabaseDep) -> Response:
    """The person's disclosure log, consent timeline and the state of the trail."""
    log, form = await _log(request, signed_in, db, patient_id, check=True)
    query = urlencode({k: v for k, v in form.items() if v})
    return render(request, "disclosure_log.html", {
        "me": signed_in, "csrf_token": signed_in.csrf_token, "log": log, "form": form,
        "query": f"?{query}" if query else "",
        "messages": [ln for ln in log.lines if not ln.is_read],
        "reads": [ln for ln in log.lines if ln.is_read]})


@router.get("/audit/people/{patient_id}/log.csv")
async def disclosure_csv(patient_id: str, request: Request, signed_in: SignedInDep,
                         db: DatabaseDep) -> Response:
    """The log (as filtered) as CSV: every matching record, not only the page's newest."""
    log, _ = await _log(request, signed_in, db, patient_id, check=False, complete=True)
    return Response(disclosures.as_csv(log.lines), media_type="text/csv; charset=utf-8",
                    headers={**SECURITY_HEADERS, "Content-Disposition":
                             f'attachment; filename="disclosures-{patient_id}.csv"'})


@router.get("/audit/people/{patient_id}/trail.json")
async def disclosure_bundle(patient_id: str, request: Request, signed_in: SignedInDep,
                            db: DatabaseDep, settings: SettingsDep) -> Response:
    """Every Consent version and disclosure AuditEvent of the person, as a FHIR Bundle (the
    same as GET /fhir/Patient/{id}/$consent-trail)."""
    subject = signed_in.subject
    require_auditor(subject)
    patient_id = _person_id(patient_id)
    await settle_reads(request)  # reads committed so far are in the log
    bundle = await audited_transaction(
        request, db, subject,
        lambda s: _trail(s, subject, patient_id, settings.fhir_base),
        interaction="operation", operation="$consent-trail", resource_type="Patient",
        touched=lambda _s, _r: _patient(patient_id), reads_only=True)
    return Response(json.dumps(bundle, ensure_ascii=False), media_type="application/fhir+json",
                    headers={**SECURITY_HEADERS, "Content-Disposition":
                             f'attachment; filename="consent-trail-{patient_id}.json"'})


def _trail(session: Session, subject: Subject, patient_id: str,
           base: str) -> dict[str, Any]:
    disclosures.read_person(session, patient_id)  # 404 for an unknown person
    return consent_trail(session, subject, patient_id=patient_id, fhir_base=base)


@router.get("/audit/people/{patient_id}/innsyn")
async def innsyn(patient_id: str, request: Request, signed_in: SignedInDep,
                 db: DatabaseDep) -> Response:
    """The printable copy for the person, in bokmål whatever the auditor's language."""
    log, _ = await _log(request, signed_in, db, patient_id, check=False, filtered=False)
    return render(request, "innsyn.html", {"me": signed_in, "log": log, "now": utcnow(),
                                           "csrf_token": signed_in.csrf_token},
                  language="nb")


@router.get("/people/{patient_id}")
async def person_page(patient_id: str, request: Request, signed_in: SignedInDep,
                      db: DatabaseDep) -> Response:
    """The person's page for a coordinator, read through the consent gate as their
    organisation."""
    subject = signed_in.subject
    if signed_in.role != "coordinator" or not signed_in.organization_id:
        raise ForbiddenError("The person's page is for coordinators of an organisation.")
    patient_id = _person_id(patient_id)
    now = utcnow()
    page = await audited_transaction(
        request, db, subject,
        lambda s: person.person_page(s, subject, patient_id=patient_id, now=now),
        interaction="read", resource_type="Patient", touched=lambda _s, _r: _patient(patient_id),
        reads_only=True)
    return render(request, "person.html", {"me": signed_in, "csrf_token": signed_in.csrf_token,
                                           "page": page},
                  status_code=200 if page is not None else 404)
