"""The FHIR REST API under /fhir: parse the request, call one service, shape the answer."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from hub import __version__
from hub.api import auditevents
from hub.api.capability import capability_statement
from hub.api.deps import (
    DatabaseDep,
    SettingsDep,
    SubjectDep,
    audited_transaction,
    read_body,
    read_json_patch,
    read_search_form,
)
from hub.api.responses import (
    FhirResponse,
    bundle,
    entry,
    handling_strict,
    page_link,
    preferred_return,
    resource_response,
)
from hub.audit.events import Interaction
from hub.audit.recorder import (
    Touched,
    touched_bodies,
    touched_bundle,
    touched_deleted,
    touched_stored,
)
from hub.auth.subject import Subject
from hub.auth.tokens import token_url
from hub.consent.gate import DISCLOSURES
from hub.errors import (
    BadRequestError,
    GoneError,
    HubError,
    Issue,
    MethodNotAllowedError,
    NotFoundError,
    operation_outcome,
)
from hub.fhir.patching import apply_json_patch
from hub.fhir.subset import subset
from hub.fhir.validation import is_known_profile, validate_message, validate_resource
from hub.store import query as search_mod
from hub.store import service, transaction
from hub.store.history import HistoryRequest, parse_history
from hub.store.resources import StoredResource, WriteResult
from hub.workflows import tasks

router = APIRouter(prefix="/fhir")
router.include_router(auditevents.router)  # first: they win over the generic routes below


@router.get("/metadata")
async def metadata(request: Request, settings: SettingsDep) -> FhirResponse:
    """The CapabilityStatement (no token needed); `mode` full or normal (both that), and 400
    for terminology: the hub serves no TerminologyCapabilities."""
    mode = request.query_params.get("mode")
    if mode == "terminology":
        raise BadRequestError("This hub serves no TerminologyCapabilities (it is no "
                              "terminology server); GET /fhir/metadata gives its "
                              "CapabilityStatement.", expression="mode")
    if mode not in (None, "full", "normal"):
        raise BadRequestError(f"mode is full, normal or terminology, not '{mode[:40]}'.",
                              expression="mode")
    return FhirResponse(capability_statement(settings.fhir_base, __version__,
                                             token_url=token_url(settings)))


_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
_TYPE = "[A-Z][A-Za-z]+"


def _served_methods(app: Any) -> list[tuple[re.Pattern[str], set[str]]]:
    """(path pattern, methods) of every documented route, from the app's OpenAPI document
    (the routes' one public description), built once per app."""
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(
        app.state, "served_methods", None)
    if table is None:
        table = []
        for path, item in app.openapi().get("paths", {}).items():
            pattern = re.sub(r"\\{(\w+)\\}",
                             lambda m: f"({_TYPE})" if m.group(1) == "resource_type"
                             else "([^/]+)", re.escape(path))
            table.append((re.compile(pattern + "$"),
                          {m.upper() for m in item if m.upper() in _ANY_METHOD}))
        app.state.served_methods = table
    return table


async def unknown(request: Request) -> FhirResponse:
    """Anything else under /fhir: 405 with `Allow` where the address serves other methods,
    else 404."""
    here = request.url.path
    path = here.removeprefix("/fhir/")
    matching = [(pattern.groups, methods) for pattern, methods in _served_methods(request.app)
                if pattern.match(here)]
    fewest = min((groups for groups, _ in matching), default=0)  # the most specific routes
    allowed = set().union(*(methods for groups, methods in matching if groups == fewest))
    if "GET" in allowed:
        allowed.add("HEAD")  # answered as GET (hub/api/heads.py)
    allowed.discard(request.method)
    if allowed:
        allow = ", ".join(sorted(allowed))
        raise MethodNotAllowedError(
            f"{request.method} is not supported at /fhir/{path[:200]}; it answers {allow}.",
            headers={"Allow": allow})
    raise NotFoundError(f"There is nothing at /fhir/{path[:200]} on this hub.")


# The system-level addresses, for the methods they do not serve: registered before the
# generic routes, which would take `metadata` or `$process-message` for a resource type.
for _path in ("/metadata", "/.well-known/smart-configuration", "/$process-message",
              "/$replay", "/$delivery-status"):
    router.add_api_route(_path, unknown, methods=_ANY_METHOD, include_in_schema=False)


@router.post("")
@router.post("/")
async def transaction_or_batch(request: Request, db: DatabaseDep, settings: SettingsDep,
                               subject: SubjectDep) -> FhirResponse:
    """A transaction (all or nothing) or batch Bundle."""
    body = await read_body(request, settings)
    if body["resourceType"] != "Bundle":
        raise BadRequestError(f"POST /fhir takes a Bundle, not a {body['resourceType']}.",
                              expression="resourceType")
    opts = transaction.BundleSettings(settings.page_size, settings.max_page_size,
                                      strict=handling_strict(request.headers.getlist("prefer")),
                                      returns=preferred_return(_prefer(request)))
    kind: Interaction = "batch" if body.get("type") == "batch" else "transaction"
    result = await audited_transaction(
        request, db, subject, lambda s: transaction.process(s, subject, body, opts),
        interaction=kind, resource_type=None,
        touched=lambda s, answer: touched_bundle(s, body, answer))
    return FhirResponse(result)


def _prefer(request: Request) -> str:
    """Every Prefer header of the request, as one list (RFC 7240 allows several)."""
    return ",".join(request.headers.getlist("prefer"))


def _check_body_type(body: dict[str, Any], resource_type: str) -> None:
    if body["resourceType"] != resource_type:
        raise BadRequestError(
            f"The body is a {body['resourceType']}, but the URL names {resource_type}.",
            expression="resourceType")


VALIDATE_MODES = ("create", "update", "delete", "profile")
"""R4's ResourceValidationMode: besides checking the resource, whether it could be created,
could replace the current version, or the current version could be deleted, by the caller."""


async def _validate_input(request: Request, settings: SettingsDep, *, body_needed: bool
                          ) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """(resource, profile, mode) of a $validate call: the resource is the body or the
    Parameters' `resource`; `profile` and `mode` come from the query or the Parameters."""
    profile = request.query_params.get("profile")
    mode = request.query_params.get("mode")
    if not body_needed and not (await request.body()).strip():
        body = None
    else:
        body = await read_body(request, settings)
    if body is not None and body["resourceType"] == "Parameters":  # it may wrap the resource
        params = [p for p in body.get("parameter", []) if isinstance(p, dict)]
        profile = profile or next((str(p.get("valueUri") or p.get("valueCanonical"))
                                   for p in params if p.get("name") == "profile"
                                   and (p.get("valueUri") or p.get("valueCanonical"))), None)
        mode = mode or next((str(p["valueCode"]) for p in params
                             if p.get("name") == "mode" and p.get("valueCode")), None)
        body = next((p["resource"] for p in params
                     if p.get("name") == "resource" and isinstance(p.get("resource"), dict)),
                    None if not body_needed else body)
    if mode is not None and mode not in VALIDATE_MODES:
        raise BadRequestError(f"mode '{mode[:40]}' is not one of {', '.join(VALIDATE_MODES)}.",
                              expression="mode")
    if profile is not None and not is_known_profile(profile):
        raise BadRequestError(f"{profile} is not a profile this hub knows; "
                              "GET /fhir/StructureDefinition lists them.", expression="profile")
    return body, profile, mode


def _as_if(s: Session, write: Callable[[], object], issues: list[Issue]) -> object:
    """Run `write` (the REST write itself, through the store service) in a savepoint that is
    always rolled back, adding why it was refused to `issues`: $validate's create, update and
    delete modes ask the rules of the real write, not a copy of them. Not found is raised."""
    decided = len(s.info.get(DISCLOSURES, ()))
    savepoint = s.begin_nested()
    done: object = None
    try:
        done = write()
    except (NotFoundError, GoneError):
        raise
    except HubError as refused:
        issues.extend(refused.issues)
    finally:
        if savepoint.is_active:
            savepoint.rollback()
    # the decisions of a write that never happened disclose nothing
    del s.info.get(DISCLOSURES, [])[decided:]
    return done


def _validated(issues: list[Issue], what: str, *, mode: str | None) -> FhirResponse:
    """The outcome: the issues, and `what` was found when there are none (or, when a mode was
    asked, none that is an error: the answer to the mode's question)."""
    if not issues or (mode not in (None, "profile")
                      and not any(i.severity in ("error", "fatal") for i in issues)):
        issues = [*issues, Issue(what, "informational", "information")]
    return FhirResponse(operation_outcome(issues))


@router.post("/{resource_type}/$validate")
async def validate(resource_type: str, request: Request, db: DatabaseDep,
                   settings: SettingsDep, subject: SubjectDep) -> FhirResponse:
    """Check a resource without storing it; always an OperationOutcome. `profile` (query or
    Parameters) checks it against one of the hub's profiles too; a message Bundle is checked
    as $process-message would (warnings included). `mode=create` also asks whether the
    caller could create it (ownership, scopes: the create itself, rolled back)."""
    service.check_type(subject, resource_type, write=False)
    body, profile, mode = await _validate_input(request, settings, body_needed=True)
    assert body is not None
    if mode in ("update", "delete"):
        raise BadRequestError(f"mode {mode} validates against a stored resource: POST "
                              f"/fhir/{resource_type}/{{id}}/$validate.", expression="mode")
    _check_body_type(body, resource_type)
    as_message = resource_type == "Bundle" and body.get("type") == "message" and profile is None

    def check(s: Session) -> tuple[list[Issue], str]:
        """The issues, and what a valid resource is told."""
        issues = (validate_message(body, warnings=True) if as_message
                  else validate_resource(body, profile=profile))
        said = f"The {resource_type} is valid" + ("; you may create it." if mode == "create"
                                                  else ".")
        if mode == "create" and not any(i.severity in ("error", "fatal") for i in issues):
            done = _as_if(s, lambda: service.create(s, subject, resource=dict(body)), issues)
            if isinstance(done, WriteResult) and not done.created:  # a person the hub keeps
                if done.readable:
                    said = (f"The {resource_type} is valid; a create would write nothing: the "
                            f"hub keeps this person as {done.stored.relative_url}.")
                else:  # what the create itself would say, and no more
                    said = f"The {resource_type} is valid; a create would write nothing."
                    issues.append(service.kept_person_issue(done.stored))
        return issues, said

    issues, said = await audited_transaction(
        request, db, subject, check, interaction="operation", operation="$validate",
        resource_type=resource_type, touched=lambda _s, _done: touched_bodies([body]))
    return _validated(issues, said, mode=mode)


@router.post("/{resource_type}/{resource_id}/$validate")
async def validate_instance(resource_type: str, resource_id: str, request: Request,
                            db: DatabaseDep, settings: SettingsDep,
                            subject: SubjectDep) -> FhirResponse:
    """$validate against a stored resource the caller may read (404 as a read otherwise):
    `mode=update` (the default here) checks the body and whether it could replace the current
    version; `mode=delete` (no body needed) whether the caller could delete it. Each runs the
    REST write itself in a savepoint that is rolled back: nothing is stored."""
    service.check_type(subject, resource_type, write=False)
    body, profile, mode = await _validate_input(request, settings, body_needed=False)
    mode = mode or "update"
    if mode == "create":
        raise BadRequestError(f"mode create validates a new resource: POST "
                              f"/fhir/{resource_type}/$validate.", expression="mode")
    if body is None and mode != "delete":
        raise BadRequestError(f"mode {mode} validates a resource: send it as the body.")
    if body is not None:
        _check_body_type(body, resource_type)

    def check(s: Session) -> list[Issue]:
        current = service.read(s, subject, resource_type=resource_type, resource_id=resource_id)
        issues = validate_resource(body, profile=profile) if body is not None else []
        if any(i.severity in ("error", "fatal") for i in issues):
            return issues
        if mode == "delete":
            _as_if(s, lambda: _delete(s, subject, resource_type, resource_id), issues)
        elif mode == "update":
            assert body is not None
            _as_if(s, lambda: _update(s, subject, resource_type, resource_id, dict(body),
                                      current.etag), issues)
        return issues

    issues = await audited_transaction(
        request, db, subject, check, interaction="operation", operation="$validate",
        resource_type=resource_type,
        touched=lambda _s, _issues: Touched((f"{resource_type}/{resource_id}",), ()))
    said = {"update": f"The {resource_type} is valid; it may replace {resource_type}/"
                      f"{resource_id}.",
            "delete": f"You may delete {resource_type}/{resource_id}.",
            "profile": f"The {resource_type} is valid."}
    return _validated(issues, said[mode], mode=mode)


# $validate and _search answer POST only: the other methods would be taken for a read or
# delete of the id "$validate" or "_search" by the generic routes below.
for _path in ("/{resource_type}/$validate", "/{resource_type}/{resource_id}/$validate",
              "/{resource_type}/_search"):
    router.add_api_route(_path, unknown, methods=[m for m in _ANY_METHOD if m != "POST"],
                         include_in_schema=False)


@router.get("/{resource_type}")
async def search(resource_type: str, request: Request, db: DatabaseDep, settings: SettingsDep,
                 subject: SubjectDep) -> FhirResponse:
    """Search one type; a searchset Bundle with paging links."""
    return await _search(resource_type, list(request.query_params.multi_items()), request, db,
                         settings, subject)


@router.post("/{resource_type}/_search")
async def search_post(resource_type: str, request: Request, db: DatabaseDep,
                      settings: SettingsDep, subject: SubjectDep) -> FhirResponse:
    """Search by form post (same as GET); a body other than a form is a 415."""
    pairs = await read_search_form(request, settings)
    return await _search(resource_type, pairs + list(request.query_params.multi_items()),
                         request, db, settings, subject)


async def _search(resource_type: str, pairs: list[tuple[str, str]], request: Request,
                  db: DatabaseDep, settings: SettingsDep, subject: SubjectDep) -> FhirResponse:
    service.check_type(subject, resource_type, write=False)
    req = search_mod.parse_request(resource_type, pairs, default_count=settings.page_size,
                                   max_count=settings.max_page_size)
    req.strict = handling_strict(request.headers.getlist("prefer"))
    matches, included, page = await audited_transaction(
        request, db, subject, lambda s: service.search(s, subject, request=req),
        interaction="search-type", resource_type=resource_type, query=urlencode(pairs),
        touched=lambda _s, found: touched_bodies(r.body for r in [*found[0], *found[1]]),
        reads_only=True)
    base = settings.fhir_base
    path = f"{base}/{resource_type}"
    kept = [(k, v) for k, v in pairs
            if k not in page.ignored and k.split(":")[0] not in page.ignored]
    links = [("self", page_link(path, kept, req.offset, req.count))]
    if page.next_offset is not None:
        links.append(("next", page_link(path, kept, page.next_offset, req.count)))
    if req.offset > 0:
        links.append(("previous", page_link(path, kept, max(0, req.offset - req.count),
                                            req.count)))
    entries = [entry(m, base, "match") for m in matches] + [entry(i, base, "include")
                                                             for i in included]
    if req.elements or req.summary not in (None, "false", "count"):
        for item in entries:
            item["resource"] = subset(item["resource"], summary=req.summary,
                                      elements=req.elements)
    if (said := page.ignored_entry(resource_type)) is not None:
        entries.append(said)
    return FhirResponse(bundle("searchset", entries, links, page.total))


@router.post("/{resource_type}")
async def create(resource_type: str, request: Request, db: DatabaseDep, settings: SettingsDep,
                 subject: SubjectDep) -> FhirResponse:
    """Create (server id); conditional with If-None-Exist."""
    service.check_type(subject, resource_type, write=True)
    body = await read_body(request, settings)
    _check_body_type(body, resource_type)
    if_none_exist = _if_none_exist(request)
    result = await audited_transaction(request, db, subject, lambda s: service.create(
        s, subject, resource=body, if_none_exist=if_none_exist),
        interaction="create", resource_type=resource_type,
        touched=lambda _s, written: touched_stored(written.stored))
    return resource_response(result.stored, status=201 if result.created else 200,
                             base=settings.fhir_base, prefer=_prefer(request),
                             location=True, withheld=None if result.readable
                             else service.kept_person_issue(result.stored))


_NOT_CRITERIA = {"_format", "_pretty"}


def _if_none_exist(request: Request) -> str | None:
    """The criteria of a conditional create: the If-None-Exist header, or the query of the
    POST URL (`POST /fhir/Patient?identifier=...`, as fhirpy's get_or_create sends it). Both,
    naming different criteria, is a 400; a query is never ignored."""
    header = request.headers.get("if-none-exist")
    pairs = [(k, v) for k, v in request.query_params.multi_items() if k not in _NOT_CRITERIA]
    if not pairs:
        return header
    from_url = urlencode(pairs)
    if header is not None and sorted(parse_qsl(header.lstrip("?"), keep_blank_values=True)) \
            != sorted(pairs):
        raise BadRequestError(
            f"The POST URL's query ({from_url[:200]}) and If-None-Exist ({header[:200]}) name "
            "different criteria for a conditional create; send one of them.")
    return from_url


@router.get("/{resource_type}/{resource_id}")
async def read(resource_type: str, resource_id: str, request: Request, db: DatabaseDep,
               settings: SettingsDep, subject: SubjectDep) -> FhirResponse:
    """The current version."""
    stored = await audited_transaction(request, db, subject, lambda s: service.read(
        s, subject, resource_type=resource_type, resource_id=resource_id),
        interaction="read", resource_type=resource_type, touched=lambda _s, r: touched_stored(r),
        reads_only=True)
    return resource_response(stored, base=settings.fhir_base)


@router.put("/{resource_type}/{resource_id}")
async def update(resource_type: str, resource_id: str, request: Request, db: DatabaseDep,
                 settings: SettingsDep, subject: SubjectDep) -> FhirResponse:
    """Update (or create under this id); If-Match guards against lost updates."""
    service.check_type(subject, resource_type, write=True)
    body = await read_body(request, settings)
    _check_body_type(body, resource_type)
    if_match = request.headers.get("if-match")

    result = await audited_transaction(
        request, db, subject,
        lambda s: _update(s, subject, resource_type, resource_id, body, if_match),
        interaction="update", resource_type=resource_type,
        touched=lambda _s, written: touched_stored(written.stored))
    return resource_response(result.stored, status=201 if result.created else 200,
                             base=settings.fhir_base, prefer=_prefer(request),
                             location=result.created)


def _update(s: Session, subject: Subject, resource_type: str, resource_id: str,
            body: dict[str, Any], if_match: str | None) -> WriteResult:
    """The REST update (PUT and $validate mode=update)."""
    if resource_type == "Task":  # a Task's status belongs to its parties' roles
        tasks.check_rest_update(s, subject, resource_id=resource_id, resource=body)
    return service.update(s, subject, resource_type=resource_type, resource_id=resource_id,
                          resource=body, if_match=if_match)


def _delete(s: Session, subject: Subject, resource_type: str, resource_id: str
            ) -> StoredResource | None:
    """The REST delete (DELETE and $validate mode=delete)."""
    return service.delete_resource(s, subject, resource_type=resource_type,
                                   resource_id=resource_id)


@router.put("/{resource_type}")
async def conditional_update(resource_type: str, request: Request, db: DatabaseDep,
                             settings: SettingsDep, subject: SubjectDep) -> FhirResponse:
    """Conditional update (`PUT /fhir/Type?criteria`): the one match the caller may see is
    updated (If-Match honoured), none creates (under the body's id, if it has one), several
    are a 412."""
    service.check_type(subject, resource_type, write=True)
    body = await read_body(request, settings)
    _check_body_type(body, resource_type)
    pairs = [(k, v) for k, v in request.query_params.multi_items() if k not in _NOT_CRITERIA]
    criteria = urlencode(pairs)
    if_match = request.headers.get("if-match")

    def write(s: Session) -> WriteResult:
        rid = service.conditional_target(s, subject, resource_type=resource_type,
                                         criteria=criteria, resource=body)
        resource = {**body, "id": rid}
        if resource_type == "Task":  # a Task's status belongs to its parties' roles
            tasks.check_rest_update(s, subject, resource_id=rid, resource=resource)
        return service.update(s, subject, resource_type=resource_type, resource_id=rid,
                              resource=resource, if_match=if_match)

    result = await audited_transaction(
        request, db, subject, write, interaction="update", resource_type=resource_type,
        query=criteria, touched=lambda _s, written: touched_stored(written.stored))
    return resource_response(result.stored, status=201 if result.created else 200,
                             base=settings.fhir_base, prefer=_prefer(request),
                             location=result.created)


@router.patch("/{resource_type}/{resource_id}")
async def patch(resource_type: str, resource_id: str, request: Request, db: DatabaseDep,
                settings: SettingsDep, subject: SubjectDep) -> FhirResponse:
    """JSON Patch (RFC 6902) of the current version, stored as an update of it: 400 for a
    malformed patch, 422 when it does not apply (or a `test` fails) or the result is invalid;
    If-Match as for update (without it, the version the patch was applied to)."""
    service.check_type(subject, resource_type, write=True)
    ops = await read_json_patch(request, settings)
    if_match = request.headers.get("if-match")

    def write(s: Session) -> WriteResult:
        current = service.read(s, subject, resource_type=resource_type, resource_id=resource_id)
        body = apply_json_patch(current.body or {}, ops, where=current.relative_url)
        if resource_type == "Task":  # a Task's status belongs to its parties' roles
            tasks.check_rest_update(s, subject, resource_id=resource_id, resource=body)
        return service.update(s, subject, resource_type=resource_type, resource_id=resource_id,
                              resource=body, if_match=if_match or current.etag)

    result = await audited_transaction(
        request, db, subject, write, interaction="update", resource_type=resource_type,
        touched=lambda _s, written: touched_stored(written.stored))
    return resource_response(result.stored, base=settings.fhir_base,
                             prefer=_prefer(request))


@router.delete("/{resource_type}/{resource_id}")
async def delete(resource_type: str, resource_id: str, request: Request, db: DatabaseDep,
                 subject: SubjectDep) -> Response:
    """Delete: a new empty version; reading it then gives 410."""
    stored = await audited_transaction(
        request, db, subject, lambda s: _delete(s, subject, resource_type, resource_id),
        interaction="delete", resource_type=resource_type,
        touched=lambda s, gone: touched_deleted(s, gone, resource_type=resource_type,
                                                resource_id=resource_id))
    headers = {"ETag": stored.etag} if stored else {}
    return Response(status_code=204, headers=headers)


@router.delete("/{resource_type}")
async def conditional_delete(resource_type: str, request: Request, db: DatabaseDep,
                             subject: SubjectDep) -> Response:
    """Conditional delete (`DELETE /fhir/Type?criteria`, single): the one match the caller
    may see is deleted as DELETE deletes it, none deletes nothing (204 both), several are a
    412; no criteria a 400."""
    service.check_type(subject, resource_type, write=True)
    pairs = [(k, v) for k, v in request.query_params.multi_items() if k not in _NOT_CRITERIA]
    criteria = urlencode(pairs)
    rid, stored = await audited_transaction(
        request, db, subject, lambda s: service.conditional_delete(
            s, subject, resource_type=resource_type, criteria=criteria),
        interaction="delete", resource_type=resource_type, query=criteria,
        touched=lambda s, gone: touched_deleted(s, gone[1], resource_type=resource_type,
                                                resource_id=gone[0]) if gone[0] else Touched())
    headers = {"ETag": stored.etag} if stored else {}
    return Response(status_code=204, headers=headers)


@router.get("/{resource_type}/{resource_id}/_history")
async def history(resource_type: str, resource_id: str, request: Request, db: DatabaseDep,
                  settings: SettingsDep, subject: SubjectDep) -> FhirResponse:
    """Instance history, newest first; `_since`, `_at`, `_count` and paging as
    hub.store.history takes them (400 for any other parameter)."""
    pairs = list(request.query_params.multi_items())
    req = parse_history(pairs, default_count=settings.page_size,
                        max_count=settings.max_page_size)
    versions, more = await audited_transaction(request, db, subject, lambda s: service.history(
        s, subject, resource_type=resource_type, resource_id=resource_id, count=req.count,
        offset=req.offset, since=req.since, at=req.at), interaction="history-instance",
        resource_type=resource_type,
        touched=lambda _s, found: Touched((f"{resource_type}/{resource_id}",))
        + touched_bodies(v.body for v in found[0]), reads_only=True)
    return FhirResponse(history_bundle(versions, more, req, pairs, base=settings.fhir_base,
                                       relative_url=f"{resource_type}/{resource_id}"))


def history_bundle(versions: list[StoredResource], more: bool, req: HistoryRequest,
                   pairs: list[tuple[str, str]], *, base: str,
                   relative_url: str) -> dict[str, Any]:
    """The history Bundle of one page of an instance's versions, with its paging links."""
    resource_type = relative_url.split("/")[0]
    path = f"{base}/{relative_url}/_history"
    links = [("self", page_link(path, pairs, req.offset, req.count))]
    if more and req.count:
        links.append(("next", page_link(path, pairs, req.offset + req.count, req.count)))
    entries = []
    for v in versions:
        item: dict[str, Any] = {"fullUrl": f"{base}/{v.relative_url}"}
        if v.body is not None:
            item["resource"] = v.body
        item["request"] = {"method": v.method, "url": (
            resource_type if v.method == "POST" else v.relative_url)}
        item["response"] = {"status": "201" if v.method == "POST" or v.version_id == 1 else (
            "204" if v.method == "DELETE" else "200"), "etag": v.etag,
            "lastModified": v.last_modified}
        entries.append(item)
    return bundle("history", entries, links)


@router.get("/{resource_type}/{resource_id}/_history/{version_id}")
async def vread(resource_type: str, resource_id: str, version_id: str, request: Request,
                db: DatabaseDep, settings: SettingsDep, subject: SubjectDep) -> FhirResponse:
    """One version."""
    if not version_id.isdigit() or len(version_id) > 18:  # no version id beyond 64 bits
        raise NotFoundError(f"{resource_type}/{resource_id} has no version "
                            f"'{version_id[:40]}'.")
    stored = await audited_transaction(request, db, subject, lambda s: service.vread(
        s, subject, resource_type=resource_type, resource_id=resource_id,
        version_id=version_id), interaction="vread", resource_type=resource_type,
        touched=lambda _s, r: touched_stored(r), reads_only=True)
    return resource_response(stored, base=settings.fhir_base)


router.add_api_route("/{path:path}", unknown, methods=_ANY_METHOD, include_in_schema=False)
