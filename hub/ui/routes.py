"""The web UI under /ui: sign in, sign out, each role's home page, and the auditors' view of
the audit trail (/ui/audit).

Every route here answers HTML with strict security headers; errors become plain pages (a
missing session becomes a redirect to the sign-in page), never OperationOutcome JSON.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from hub.api.auditevents import require_auditor
from hub.api.deps import (
    AuditorDep,
    DatabaseDep,
    SettingsDep,
    audited_transaction,
    client_address,
    get_auditor,
    in_transaction,
    settle_reads,
)
from hub.audit import queries as audit_queries
from hub.audit.recorder import Touched
from hub.auth.users import SIGN_IN_FAILED, SignInError, authenticate
from hub.db.types import utcnow
from hub.delivery import service as delivery_service
from hub.errors import BadRequestError, PayloadTooLargeError
from hub.ui import i18n, queries, transitions
from hub.ui.pages import UIRoute, render
from hub.ui.sessions import (
    CSRF_COOKIE,
    CSRF_FIELD,
    SESSION_COOKIE,
    OptionalSessionDep,
    SignedInDep,
    check_csrf,
    clear_cookie,
    end_session,
    is_https,
    pre_session_csrf,
    set_cookie,
    start_session,
)

_FORM_LIMIT = 16 * 1024
_FORM_FIELDS = 20
_render = render


router = APIRouter(prefix="/ui", route_class=UIRoute, include_in_schema=False)


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a url-encoded form (first value of each). Raises BadRequestError,
    PayloadTooLargeError."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > _FORM_LIMIT:
            raise PayloadTooLargeError("The form is too large.")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        return {}  # an empty form, whatever its type: the CSRF check answers it
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise BadRequestError("Send the form as an ordinary web form.")
    try:
        pairs = parse_qsl(body.decode("utf-8", errors="replace"),
                          keep_blank_values=True, max_num_fields=_FORM_FIELDS)
    except ValueError:
        raise BadRequestError("The form has too many fields.") from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        fields.setdefault(key, value)
    return fields


@router.get("")
@router.get("/")
async def home(request: Request, signed_in: SignedInDep, db: DatabaseDep,
               settings: SettingsDep) -> Response:
    """The signed-in person's home page; without a session, a redirect to sign in."""
    limit = settings.max_page_size

    def load(session: Session) -> queries.HomePage:
        return queries.home_page(session, role=signed_in.role,
                                 organization_id=signed_in.organization_id, limit=limit)

    page = await in_transaction(db, load, write=False)
    pending = None
    if signed_in.role == "coordinator" and signed_in.organization_id:
        subject, now = signed_in.subject, utcnow()
        pending = await audited_transaction(
            request, db, subject,
            lambda s: transitions.pending_transitions(s, subject, now=now),
            interaction="search-type", resource_type="Task", query="view=pending-transitions",
            touched=lambda _s, found: Touched((), found.patients), reads_only=True)
    replayed = request.query_params.get("replayed", "")
    q = request.query_params.get("q", "").strip()[:100]
    return _render(request, "home.html", {
        "me": signed_in, "page": page,
        "pending": transitions.only_named(pending, q) if pending else None, "q": q,
        "events": transitions.EVENTS, "replayed": replayed if replayed.isdigit() else None,
        "csrf_token": signed_in.csrf_token})


@router.post("/deliveries/{delivery_id}/replay")
async def replay_delivery(delivery_id: int, request: Request, signed_in: SignedInDep,
                          db: DatabaseDep) -> Response:
    """Queue a dead letter again (coordinators of its sender or receiver; the form must carry
    the session's CSRF token), recorded in the audit trail like POST /fhir/$replay; back to
    the home page, which says so."""
    form = await read_form(request)
    check_csrf(signed_in.csrf_token, form.get(CSRF_FIELD))
    subject = signed_in.subject
    await audited_transaction(
        request, db, subject,
        lambda s: delivery_service.replay(s, subject, delivery_ids=[delivery_id],
                                          auditor=get_auditor(request)),
        interaction="operation", operation="$replay", resource_type=None,
        touched=lambda _s, done: Touched((), tuple(d.patient_ref for d in done
                                                   if d.patient_ref)))
    return RedirectResponse(f"/ui?replayed={delivery_id}#dead-letters", status_code=303)


@router.get("/sign-in")
async def sign_in_form(request: Request, signed_in: OptionalSessionDep,
                       settings: SettingsDep) -> Response:
    """The sign-in form, with a fresh pre-session CSRF cookie."""
    if signed_in is not None:
        return RedirectResponse("/ui", status_code=303)
    token = pre_session_csrf(request)
    response = _render(request, "sign_in.html", {"csrf_token": token, "error": None,
                                                 "username": ""})
    set_cookie(response, CSRF_COOKIE, token, secure=is_https(request, settings))
    return response


@router.post("/sign-in")
async def sign_in(request: Request, db: DatabaseDep, settings: SettingsDep,
                  auditor: AuditorDep) -> Response:
    """Check the password; on success a new session and a redirect home, else the form again
    with one generic message (401). A missing or wrong CSRF token gives 403."""
    form = await read_form(request)
    csrf = request.cookies.get(CSRF_COOKIE)
    check_csrf(csrf, form.get(CSRF_FIELD))
    username, password = form.get("username", "").strip(), form.get("password", "")
    previous = request.cookies.get(SESSION_COOKIE)
    now = utcnow()
    address = client_address(request)

    def work(session: Session) -> tuple[str, str] | None:
        try:
            user = authenticate(session, username, password, now,
                                max_failures=settings.signin_max_failures,
                                lockout=settings.signin_lockout, auditor=auditor,
                                address=address)
        except SignInError:
            return None  # commit anyway: the failure count and its audit record are in it
        return start_session(session, user, now=now, lifetime=settings.session_lifetime,
                             replacing=previous)

    started = await in_transaction(db, work, write=True)
    secure = is_https(request, settings)
    if started is None:
        return _render(request, "sign_in.html",
                       {"csrf_token": csrf, "error": SIGN_IN_FAILED, "username": username},
                       status_code=401)
    response = RedirectResponse("/ui", status_code=303)
    set_cookie(response, SESSION_COOKIE, started[0], secure=secure)
    clear_cookie(response, CSRF_COOKIE, secure=secure)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, signed_in: OptionalSessionDep, db: DatabaseDep,
                   settings: SettingsDep) -> Response:
    """End the session (the form must carry its CSRF token) and go to the sign-in page."""
    form = await read_form(request)
    secure = is_https(request, settings)
    raw = request.cookies.get(SESSION_COOKIE)
    if signed_in is not None and raw:
        check_csrf(signed_in.csrf_token, form.get(CSRF_FIELD))
        await in_transaction(db, lambda s: end_session(s, raw), write=True)
    response = RedirectResponse("/ui/sign-in", status_code=303)
    clear_cookie(response, SESSION_COOKIE, secure=secure)
    return response


@router.get("/audit")
async def audit(request: Request, signed_in: SignedInDep, db: DatabaseDep,
                settings: SettingsDep) -> Response:
    """The audit trail for auditors: records by patient and time, oldest first (the same search
    as GET /fhir/AuditEvent, and recorded in the trail like it)."""
    subject = signed_in.subject
    require_auditor(subject)
    form = {k: request.query_params.get(k, "").strip() for k in ("patient", "from", "to")}
    number = "".join(form["patient"].split())
    if len(number) == 11 and number.isdigit():  # a fødselsnummer or D-nummer: the person
        return RedirectResponse(f"/ui/audit/people?{urlencode({'number': number})}",
                                status_code=303)
    pairs = [("patient", form["patient"])] if form["patient"] else []
    pairs += [("date", f"ge{form['from']}")] if form["from"] else []
    pairs += [("date", f"le{form['to']}")] if form["to"] else []
    error, page = None, None
    after = request.query_params.get("after", "")
    try:
        query = audit_queries.parse_query(
            pairs + ([("_after", after)] if after else []),
            default_count=settings.page_size, max_count=settings.max_page_size)
    except BadRequestError as exc:
        error = exc.diagnostics
    else:
        await settle_reads(request)  # reads committed so far are in the answer
        page = await audited_transaction(
            request, db, subject, lambda s: audit_queries.search(s, query),
            interaction="search-type", resource_type="AuditEvent", query=urlencode(pairs),
            touched=lambda _s, found: Touched((), tuple(dict.fromkeys(
                [p for ps in query.patients for p in ps]
                + [ln.patient_ref for ln in found.lines if ln.patient_ref]))),
            reads_only=True)
    more = (f"/ui/audit?{urlencode({**form, 'after': str(page.next_after)})}"
            if page is not None and page.next_after is not None else None)
    return _render(request, "audit.html", {"me": signed_in, "csrf_token": signed_in.csrf_token,
                                           "form": form, "page": page, "error": error,
                                           "more": more},
                   status_code=400 if error else 200)


@router.get("/language")
async def choose_language(request: Request, settings: SettingsDep) -> Response:
    """Remember the chosen language in a cookie (a year) and go back to the page. A link, not
    a form with a CSRF token, knowingly: it changes only how pages are worded for this
    browser, nothing of the hub's (probe F, session 23, asked). Secure over TLS, as the
    session's cookies are."""
    lang = request.query_params.get("lang", "")
    back = request.query_params.get("back", "/ui")
    if not back.startswith("/ui") or back.startswith("//"):
        back = "/ui"
    response = RedirectResponse(back, status_code=303)
    if lang in i18n.LANGUAGES:
        response.set_cookie(i18n.COOKIE, lang, max_age=365 * 24 * 3600, path="/ui",
                            httponly=True, samesite="lax", secure=is_https(request, settings))
    return response
