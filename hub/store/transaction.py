"""Transaction and batch Bundles (FHIR R4 3.1.0.11).

A transaction is all or nothing: it runs in the caller's database transaction and any failed
entry, a read (GET) as much as a write, raises, so the caller rolls everything back and
answers that entry's error (FHIR: accept all actions or reject all). `urn:uuid:` and other
fullUrls are resolved to the ids the hub assigns before anything is written, and so are
conditional references (`Type?criteria`, R4 http.html 3.1.0.11.2): searched as the caller,
among what it may see, after the deletes and before the other entries run; exactly one match
is rewritten to `Type/id`, none or several fail the transaction with 412. A batch runs each
entry in its own savepoint and reports each outcome, a failed read or reference included.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from sqlalchemy.orm import Session

from hub.auth.subject import Subject
from hub.db.types import utcnow
from hub.errors import (
    BadRequestError,
    ConflictError,
    HubError,
    InvalidResourceError,
    Issue,
    PreconditionFailedError,
    operation_outcome,
)
from hub.fhir import refs as fhir_refs
from hub.fhir.identifiers import person_numbers
from hub.fhir.strings import RULE, forbidden_character
from hub.fhir.subset import subset
from hub.store import query as search_mod
from hub.store import service
from hub.store.dates import format_instant
from hub.store.resources import StoredResource, WriteResult
from hub.store.types import SERVED

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}


@dataclass
class _Entry:
    index: int
    method: str
    url: str
    resource: dict[str, Any] | None
    request: dict[str, Any]
    full_url: str | None
    target_id: str | None = None  # resolved logical id for POST/PUT
    response: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BundleSettings:
    """What the processor needs to know about the request context."""

    page_size: int
    max_page_size: int
    strict: bool = False
    """`Prefer: handling=strict`: a search entry's unsupported parameter fails the entry."""
    returns: str | None = None
    """`Prefer: return=`: what a write entry's answer carries besides its response:
    `representation` the resource, `OperationOutcome` an outcome saying what was stored,
    `minimal` or None nothing (a read's resource is always there)."""


def _entries(bundle: dict[str, Any]) -> list[_Entry]:
    out = []
    for i, raw in enumerate(bundle.get("entry") or []):
        where = f"Bundle.entry[{i}]"
        request = raw.get("request") if isinstance(raw, dict) else None
        if not isinstance(request, dict) or not request.get("method") or not request.get("url"):
            raise BadRequestError(f"{where}.request needs a method and a url.",
                                  expression=f"{where}.request")
        method = str(request["method"]).upper()
        if method not in _ORDER or method in ("PATCH", "HEAD"):
            raise BadRequestError(f"{where}.request.method {method} is not supported.",
                                  expression=f"{where}.request.method")
        resource = raw.get("resource")
        if method in ("POST", "PUT") and not isinstance(resource, dict):
            raise BadRequestError(f"{where} has method {method} but no resource.",
                                  expression=f"{where}.resource")
        url = str(request["url"]).lstrip("/")
        full_url = raw.get("fullUrl")
        for name, text in (("fullUrl", full_url), ("request.url", url)):
            if isinstance(text, str) and (found := forbidden_character(text)) is not None:
                raise BadRequestError(f"{where}.{name} holds the control character {found}; "
                                      f"{RULE}.", expression=f"{where}.{name}")
        out.append(_Entry(i, method, url, resource, request, full_url))
    _check_full_urls_unique(out)
    return out


def _check_full_urls_unique(entries: list[_Entry]) -> None:
    """R4 bdl-7: a fullUrl names one entry. In a transaction or batch the fullUrl is what
    references resolve to, so two entries under one fullUrl are refused whatever their
    meta.versionId (as a message's are, hub.fhir.profiles); InvalidResourceError naming both."""
    first: dict[str, int] = {}
    issues = []
    for e in entries:
        if not isinstance(e.full_url, str) or not e.full_url:
            continue
        if e.full_url in first:
            where = f"Bundle.entry[{e.index}].fullUrl"
            issues.append(Issue(
                f"{where} {e.full_url[:200]} is also the fullUrl of "
                f"Bundle.entry[{first[e.full_url]}]; each entry has its own (FHIR bdl-7), or "
                "a reference to it could not tell which entry it means.",
                "invalid", "error", where))
        else:
            first[e.full_url] = e.index
    if issues:
        raise InvalidResourceError(issues[0].diagnostics, issues=issues)


def _split_url(url: str) -> tuple[str, str | None, str | None]:
    """'Type/id' -> (Type, id, None); 'Type?q' -> (Type, None, q); 'Type' -> (Type, None, None)."""
    path, _, query = url.partition("?")
    parts = path.split("/")
    rtype = parts[0]
    rid = parts[1] if len(parts) > 1 and parts[1] else None
    if len(parts) > 2 or (rid and rid.startswith("$")) or rtype.startswith("$"):
        raise BadRequestError(f"Entry url '{url}' names an operation or path this hub does not "
                              "process inside a Bundle.")
    return rtype, rid, (query or None)


def _resolve_one(session: Session, subject: Subject, e: _Entry,
                 claimed: dict[tuple[str, str], str]) -> None:
    """Decide the id a POST or PUT entry writes; conditional entries with the same criteria
    share it (the later one then finds what the earlier one created)."""
    assert e.resource is not None
    rtype, rid, query = _split_url(e.url)
    if e.resource.get("resourceType") != rtype:
        raise BadRequestError(
            f"The resource is a {e.resource.get('resourceType')} but the request url names "
            f"{rtype}.", expression=f"Bundle.entry[{e.index}]")
    service.check_type(subject, rtype, write=True)
    criteria = e.request.get("ifNoneExist") if e.method == "POST" else query
    if e.method == "PUT" and rid:
        service.check_body_id(rtype, rid, e.resource)  # as the REST PUT: 400 otherwise
        e.target_id = rid
    elif criteria and e.method == "PUT":
        # a conditional update, as PUT /fhir/Type?criteria decides it (matched as the caller
        # sees, the body's id rules, the criteria locked); a later entry with the same
        # criteria writes the same resource
        key = (rtype, urlencode(sorted(parse_qsl(criteria, keep_blank_values=True))))
        e.target_id = claimed.get(key) or service.conditional_target(
            session, subject, resource_type=rtype, criteria=criteria, resource=e.resource)
        claimed[key] = e.target_id
    elif criteria:
        key = (rtype, urlencode(sorted(parse_qsl(criteria, keep_blank_values=True))))
        found = service.match(session, subject, resource_type=rtype, criteria=criteria, limit=2)
        if len(found) > 1:
            raise PreconditionFailedError(f"'{criteria}' matches more than one {rtype}.")
        if found:
            e.target_id = found[0].logical_id
        elif key in claimed:
            e.target_id = claimed[key]
        else:
            e.target_id = _new_or_kept_person(session, subject, e.resource, claimed)
        claimed[key] = e.target_id
    else:
        e.target_id = _new_or_kept_person(session, subject, e.resource, claimed)


def _new_or_kept_person(session: Session, subject: Subject, resource: dict[str, Any],
                        claimed: dict[tuple[str, str], str]) -> str:
    """The id a created resource gets: for a Patient, the one the hub keeps for the person,
    or the one an earlier entry creates for them (CONTRACT section 3: one Patient per
    person); else a new id."""
    kept = service.kept_person_of(session, subject, resource)
    if kept is not None:
        return kept.logical_id
    numbers = person_numbers(resource) if resource.get("resourceType") == "Patient" else []
    earlier = [claimed[("Patient#person", n)] for n in numbers if ("Patient#person", n) in claimed]
    rid = earlier[0] if earlier else str(uuid.uuid4())
    claimed.update({("Patient#person", n): rid for n in numbers})
    return rid


def _resolve_ids(session: Session, subject: Subject, entries: list[_Entry]) -> dict[str, str]:
    """Decide every written resource's id before writing; map each fullUrl to 'Type/id'."""
    refs: dict[str, str] = {}
    claimed: dict[tuple[str, str], str] = {}
    # Every person the entries name, locked at once (in one order, so no deadlock) before
    # each entry looks its person up.
    service.lock_people(session, [n for e in entries if e.method in ("POST", "PUT")
                                  and e.resource and e.resource.get("resourceType") == "Patient"
                                  for n in person_numbers(e.resource)])
    for e in entries:
        if e.method not in ("POST", "PUT"):
            continue
        try:
            _resolve_one(session, subject, e, claimed)
        except HubError as err:
            raise _prefixed(err, e.index) from err
        if e.full_url:
            refs[e.full_url] = f"{_split_url(e.url)[0]}/{e.target_id}"
    return refs


Resolve = Callable[[str, str, str, str], str]
"""(reference, type, criteria, where) -> 'Type/id' of a conditional reference."""


def _conditional_references(session: Session, subject: Subject) -> Resolve:
    """The resolver of conditional references for one Bundle: each searched once, as
    `subject` (only what it may see counts, as for conditional update). Raises
    PreconditionFailedError (no match or several), BadRequestError (criteria the search
    refuses, a type the hub does not serve), ForbiddenError (no read scope on the type)."""
    found: dict[str, str] = {}

    def resolve(reference: str, rtype: str, criteria: str, where: str) -> str:
        if reference in found:
            return found[reference]
        said = f"{where} is the conditional reference '{reference[:200]}'"
        if rtype not in SERVED:
            raise BadRequestError(f"{said}, but this hub serves no {rtype} resources.",
                                  expression=where)
        service.check_type(subject, rtype, write=False)
        if not parse_qsl(criteria, keep_blank_values=True):
            raise BadRequestError(f"{said}, which has no search criteria.", expression=where)
        try:
            ids = service.visible_matches(session, subject, resource_type=rtype,
                                          criteria=criteria)
        except BadRequestError as err:
            raise BadRequestError(f"{said}: {err.diagnostics}", expression=where) from err
        if len(ids) != 1:
            how = "matches no" if not ids else "matches more than one"
            raise PreconditionFailedError(
                f"{said}, which {how} {rtype} you may see; a conditional reference needs "
                "exactly one match.", expression=where)
        found[reference] = f"{rtype}/{ids[0]}"
        return found[reference]

    return resolve


def _rewrite(node: Any, refs: dict[str, str], where: str, resolve: Resolve) -> Any:
    """`node` with each reference to a fullUrl of the Bundle and each conditional reference
    rewritten to `Type/id`; BadRequestError for a `urn:uuid:` that is no entry."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            here = f"{where}.{key}"
            if key == "reference" and isinstance(value, str):
                if value in refs:
                    value = refs[value]
                elif value.startswith("urn:uuid:"):
                    raise BadRequestError(
                        f"{here} refers to {value}, which is no entry of this Bundle.",
                        expression=here)
                elif (conditional := fhir_refs.conditional(value)) is not None:
                    value = resolve(value, *conditional, here)
            out[key] = _rewrite(value, refs, here, resolve)
        return out
    if isinstance(node, list):
        return [_rewrite(v, refs, f"{where}[{i}]", resolve) for i, v in enumerate(node)]
    return node


def _response(status: int, stored: StoredResource | None) -> dict[str, Any]:
    resp: dict[str, Any] = {"status": _STATUS_TEXT.get(status, str(status))}
    if stored is not None:
        resp["location"] = f"{stored.relative_url}/_history/{stored.version_id}"
        resp["etag"] = stored.etag
        resp["lastModified"] = stored.last_modified
    return resp


def _run_delete(session: Session, subject: Subject, e: _Entry,
                touch: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    rtype, rid, query = _split_url(e.url)
    if rid:
        if touch:
            touch(f"{rtype}/{rid}", e.index)
        service.delete_resource(session, subject, resource_type=rtype, resource_id=rid)
    else:  # as DELETE /fhir/Type?criteria does it
        rid, _ = service.conditional_delete(session, subject, resource_type=rtype,
                                            criteria=query or "")
        if touch and rid:
            touch(f"{rtype}/{rid}", e.index)
    return _response(204, None)


def _run_entry(session: Session, subject: Subject, e: _Entry,
               settings: BundleSettings) -> tuple[dict[str, Any], dict[str, Any] | None]:
    rtype, rid, query = _split_url(e.url)
    if e.method == "POST":
        assert e.resource is not None
        result = service.create(session, subject, resource=e.resource,
                                if_none_exist=e.request.get("ifNoneExist"),
                                assigned_id=e.target_id)
        if result.stored.id != e.target_id:
            raise ConflictError(
                f"ifNoneExist '{e.request.get('ifNoneExist')}' matches {rtype}/"
                f"{result.stored.id}, written earlier in this same transaction; give the two "
                "entries the same criteria or send them in separate requests.")
        if not result.readable:  # the person's Patient, named; not its version or time
            response = {"status": _STATUS_TEXT[200], "location": result.stored.relative_url,
                        "outcome": operation_outcome([service.kept_person_issue(
                            result.stored)])}
            return response, None
        return _written(result, settings), result.stored.body
    if e.method == "PUT":
        assert e.resource is not None
        assert e.target_id is not None
        body = {**e.resource, "id": e.target_id}
        result = service.update(session, subject, resource_type=rtype, resource_id=e.target_id,
                                resource=body, if_match=e.request.get("ifMatch"))
        return _written(result, settings), result.stored.body
    # GET
    if rid:
        stored = service.read(session, subject, resource_type=rtype, resource_id=rid)
        return _response(200, stored), stored.body
    pairs = parse_qsl(query or "", keep_blank_values=True)
    request = search_mod.parse_request(rtype, pairs, default_count=settings.page_size,
                                       max_count=settings.max_page_size)
    request.strict = settings.strict
    matches, included, page = service.search(session, subject, request=request)
    trim = bool(request.elements) or request.summary not in (None, "false", "count")

    def shown(body: dict[str, Any] | None) -> dict[str, Any] | None:
        """As the REST search shows it (trimmed, marked SUBSETTED, where asked)."""
        if not trim or body is None:
            return body
        return subset(body, summary=request.summary, elements=request.elements)

    found: list[dict[str, Any]] = (
        [{"resource": shown(m.body), "search": {"mode": "match"}} for m in matches]
        + [{"resource": shown(m.body), "search": {"mode": "include"}} for m in included])
    if (said := page.ignored_entry(rtype)) is not None:  # as REST says it, never in silence
        found.append(said)
    searchset: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if page.total is not None:
        searchset["total"] = page.total
    searchset["entry"] = found
    return _response(200, None), searchset


def _written(result: WriteResult, settings: BundleSettings) -> dict[str, Any]:
    """A write entry's response; with `Prefer: return=OperationOutcome`, saying what it
    stored."""
    response = _response(201 if result.created else 200, result.stored)
    if settings.returns == "OperationOutcome":
        response["outcome"] = operation_outcome([Issue(
            result.stored.stored_text(created=result.created), "informational", "information")])
    return response


def _result(e: _Entry, response: dict[str, Any], resource: dict[str, Any] | None,
            settings: BundleSettings) -> dict[str, Any]:
    """A response entry: a read's resource; a write's where `Prefer: return=representation`
    asks for it."""
    item: dict[str, Any] = {"response": response}
    if resource is not None and (e.method == "GET" or settings.returns == "representation"):
        item["resource"] = resource
    return item


def _error_response(err: HubError) -> dict[str, Any]:
    return {"status": str(err.status), "outcome": err.outcome()}


def process(session: Session, subject: Subject, bundle: dict[str, Any],
            settings: BundleSettings) -> dict[str, Any]:
    """Run a transaction or batch Bundle; the transaction-response or batch-response Bundle.
    A transaction raises the first failed entry's HubError (naming the entry) and writes
    nothing."""
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise BadRequestError(
            f"POST /fhir takes a Bundle of type transaction or batch, not '{kind}'.",
            expression="Bundle.type")
    entries = _entries(bundle)
    if kind == "transaction":
        return _transaction(session, subject, entries, settings)
    return _batch(session, subject, entries, settings)


def _prefixed(err: HubError, index: int) -> HubError:
    """`err` naming the entry; without its headers (an entry's `Allow`, say, is not about
    POST /fhir)."""
    where = f"Bundle.entry[{index}]"
    issues = [Issue(i.diagnostics if i.diagnostics.startswith("Bundle.entry")
                    else f"{where}: {i.diagnostics}", i.code, i.severity,
                    i.expression if (i.expression or "").startswith("Bundle") else where)
              for i in err.issues]
    err.issues = issues
    err.diagnostics = issues[0].diagnostics
    err.headers = {}
    return err


def _transaction(session: Session, subject: Subject, entries: list[_Entry],
                 settings: BundleSettings) -> dict[str, Any]:
    results: dict[int, dict[str, Any]] = {}
    touched: dict[str, int] = {}

    def touch(key: str, index: int) -> None:
        if key in touched:
            raise BadRequestError(
                f"Bundle.entry[{index}] writes {key}, which Bundle.entry[{touched[key]}] "
                "already writes; a transaction may touch each resource once.",
                expression=f"Bundle.entry[{index}]")
        touched[key] = index

    # Deletes first (as FHIR orders them), so that conditional entries resolved next see them.
    for e in (x for x in entries if x.method == "DELETE"):
        try:
            results[e.index] = {"response": _run_delete(session, subject, e, touch)}
        except HubError as err:
            raise _prefixed(err, e.index) from err
    refs = _resolve_ids(session, subject, entries)
    resolve = _conditional_references(session, subject)
    for e in entries:
        if e.method in ("POST", "PUT"):
            touch(f"{_split_url(e.url)[0]}/{e.target_id}", e.index)
            try:
                e.resource = _rewrite(e.resource, refs, f"Bundle.entry[{e.index}].resource",
                                      resolve)
            except HubError as err:
                raise _prefixed(err, e.index) from err
    for e in sorted((x for x in entries if x.method != "DELETE"),
                    key=lambda x: (_ORDER[x.method], x.index)):
        try:
            response, resource = _run_entry(session, subject, e, settings)
        except HubError as err:  # a failed read too: all or nothing
            raise _prefixed(err, e.index) from err
        results[e.index] = _result(e, response, resource, settings)
        if e.full_url:
            results[e.index]["fullUrl"] = e.full_url
    return {"resourceType": "Bundle", "type": "transaction-response",
            "timestamp": format_instant(utcnow()),
            "entry": [results[e.index] for e in entries]}


def _batch(session: Session, subject: Subject, entries: list[_Entry],
           settings: BundleSettings) -> dict[str, Any]:
    out = []
    resolve = _conditional_references(session, subject)
    for e in entries:
        try:
            with session.begin_nested():
                if e.method == "DELETE":
                    response, resource = _run_delete(session, subject, e), None
                else:
                    if e.method in ("POST", "PUT"):
                        refs = _resolve_ids(session, subject, [e])
                        # entries of a batch stand alone: no urn:uuid reference can resolve
                        e.resource = _rewrite(e.resource, refs,
                                              f"Bundle.entry[{e.index}].resource", resolve)
                    response, resource = _run_entry(session, subject, e, settings)
            out.append(_result(e, response, resource, settings))
        except HubError as err:
            out.append({"response": _error_response(_prefixed(err, e.index))})
    return {"resourceType": "Bundle", "type": "batch-response",
            "timestamp": format_instant(utcnow()), "entry": out}


__all__ = ["BundleSettings", "operation_outcome", "process"]
