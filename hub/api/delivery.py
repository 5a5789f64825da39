"""Delivery under /fhir (CONTRACT 6): $delivery-status, the pull, and $replay of dead letters.

Registered before the generic /fhir routes. `GET /fhir/Bundle` is the pull when it carries
`message.receiver`; without it, it is the ordinary Bundle search of hub.api.fhir.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session

from hub.api import fhir
from hub.api.deps import (
    DatabaseDep,
    SettingsDep,
    SubjectDep,
    audited_transaction,
    get_auditor,
    read_body,
)
from hub.api.responses import FhirResponse, bundle, resource_response
from hub.audit.recorder import Touched, touched_bodies
from hub.auth.subject import Subject
from hub.config import Settings
from hub.delivery import service
from hub.errors import BadRequestError, ForbiddenError, NotFoundError
from hub.messaging.models import DeliveryRow
from hub.store import service as store
from hub.store.dates import format_instant, parse_range
from hub.store.history import in_time, parse_history
from hub.store.query import whole_number
from hub.store.resources import StoredResource

router = APIRouter(prefix="/fhir")

RECEIVER = "message.receiver"


def _one(pairs: list[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in pairs if k == name]
    if len(values) > 1:
        raise BadRequestError(f"Give {name} once.", expression=name)
    return values[0] if values else None


@router.get("/$delivery-status")
async def delivery_status(request: Request, db: DatabaseDep, subject: SubjectDep
                          ) -> FhirResponse:
    """Parameters with one `destination` per receiver: receiver, status, attempts,
    last-error. Only for the sending organisation (404 for anyone else)."""
    message = _one(list(request.query_params.multi_items()), "message")
    if not message:
        raise BadRequestError("Name the message: ?message=<MessageHeader.id>.",
                              expression="message")
    result = await audited_transaction(
        request, db, subject, lambda s: service.delivery_status(s, subject, message),
        interaction="operation", operation="$delivery-status", resource_type=None,
        query=request.url.query)
    return FhirResponse(result)


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    if not value.startswith("gt"):
        raise BadRequestError("The pull pages by _lastUpdated=gt<instant> only.",
                              expression="_lastUpdated")
    span = parse_range(value[2:])
    if span is None:
        raise BadRequestError(f"_lastUpdated: '{value[2:]}' is not a FHIR instant.",
                              expression="_lastUpdated")
    return span[1]


def _count(value: str | None, default: int, most: int) -> int:
    if value is None:
        return default
    number = whole_number("_count", value)
    if number < 0:
        raise BadRequestError(f"_count must be a whole number, 0 or more, not '{value}'.",
                              expression="_count")
    return min(number, most)


_PULL_PARAMS = (RECEIVER, "_lastUpdated", "_count", "_summary", "_total", "_format", "_pretty")
_KEPT_IN_LINKS = ("_summary", "_total", "_format", "_pretty")


def _wants_total(pairs: list[tuple[str, str]], count: int) -> tuple[int, bool]:
    """(count, whether `total` is asked) as CONTRACT 2 says for searches: `_summary=count`
    and `_count=0` ask the total alone, `_total=accurate` asks it with the page."""
    summary = _one(pairs, "_summary")
    if summary not in (None, "count", "false"):
        raise BadRequestError(f"The pull takes _summary=count (or false), not '{summary[:40]}'"
                              "; its messages are not trimmed.", expression="_summary")
    total = _one(pairs, "_total")
    if total not in (None, "none", "estimate", "accurate"):
        raise BadRequestError(f"_total is none, estimate or accurate, not '{total[:40]}'.",
                              expression="_total")
    if summary == "count":
        count = 0
    return count, count == 0 or total == "accurate"


@router.get("/Bundle")
async def bundles(request: Request, db: DatabaseDep, settings: SettingsDep,
                  subject: SubjectDep) -> FhirResponse:
    """The pull (`message.receiver=Organization/<own id>`, `_lastUpdated=gt<instant>`,
    `_count`): a searchset of the receiver's message Bundles, oldest first, each with
    meta.lastUpdated = when it was published. `_count=0` and `_summary=count` answer the
    total alone and hand out (mark) nothing; `_total=accurate` adds it to a page; `_format`
    and `_pretty` as anywhere. Otherwise the generic Bundle search."""
    pairs = list(request.query_params.multi_items())
    receiver = _one(pairs, RECEIVER)
    if receiver is None:
        return await fhir.search("Bundle", request, db, settings, subject)
    unknown = sorted({k for k, _ in pairs} - set(_PULL_PARAMS))
    if unknown:
        raise BadRequestError(f"The pull takes {', '.join(_PULL_PARAMS)} only, not "
                              f"{', '.join(unknown)}.", expression=unknown[0])
    org = receiver.removeprefix("Organization/")
    if "/" in org or not org:
        raise BadRequestError(f"{RECEIVER} is Organization/<id>, not '{receiver}'.",
                              expression=RECEIVER)
    if subject.organization_id != org:
        raise ForbiddenError(f"You act for Organization/{subject.organization_id}; pull only "
                             "your own messages.", expression=RECEIVER)
    since = _since(_one(pairs, "_lastUpdated"))
    count, wants_total = _wants_total(
        pairs, _count(_one(pairs, "_count"), settings.page_size, settings.max_page_size))
    found: list[tuple[DeliveryRow, dict[str, Any]]] = []
    total: int | None = None
    if count == 0:
        # the total alone: a read that hands out nothing, so marks nothing delivered
        total = await audited_transaction(
            request, db, subject,
            lambda s: service.pull_total(s, subject, settings, since=since),
            interaction="search-type", resource_type="Bundle", query=urlencode(pairs),
            reads_only=True)
    else:
        def pull(s: Session) -> tuple[int | None, list[tuple[DeliveryRow, dict[str, Any]]]]:
            # counted before the page is handed out, so it counts the page too
            counted = service.pull_total(s, subject, settings, since=since) \
                if wants_total else None
            return counted, service.pull(s, subject, settings, since=since, count=count)

        total, found = await audited_transaction(
            request, db, subject, pull,
            interaction="search-type", resource_type="Bundle", query=urlencode(pairs),
            touched=lambda _s, got: Touched(tuple(f"Bundle/{b['id']}" for _, b in got[1]))
            + touched_bodies(e.get("resource") for _, b in got[1] for e in b.get("entry", [])))
    base = settings.fhir_base
    kept = [(k, v) for k, v in pairs if k in _KEPT_IN_LINKS]

    def link(after: datetime | None) -> str:
        query = [(RECEIVER, f"Organization/{org}")]
        if after is not None:
            query.append(("_lastUpdated", f"gt{format_instant(after)}"))
        return f"{base}/Bundle?{urlencode([*query, ('_count', str(count)), *kept])}"

    links = [("self", link(since))]
    if count and len(found) == count:
        links.append(("next", link(found[-1][0].published_at)))
    entries: list[dict[str, Any]] = [
        {"fullUrl": f"{base}/Bundle/{b['id']}", "resource": b, "search": {"mode": "match"}}
        for _, b in found]
    return FhirResponse(bundle("searchset", entries, links,
                               total=total if wants_total else None))


def _delivered(s: Session, subject: Subject, settings: Settings, bundle_id: str,
               version_id: str | None = None) -> StoredResource:
    """Bundle/`bundle_id` (at `version_id`) as the store gives it to `subject`, else as the
    pull handed it to `subject`'s organisation (its fullUrl names it; version 1 only)."""
    try:
        if version_id is None:
            return store.read(s, subject, resource_type="Bundle", resource_id=bundle_id)
        return store.vread(s, subject, resource_type="Bundle", resource_id=bundle_id,
                           version_id=version_id)
    except NotFoundError:
        if version_id not in (None, "1"):
            raise
        row, body = service.delivered_bundle(s, subject, settings, bundle_id=bundle_id)
        assert row.published_at is not None
        return StoredResource("Bundle", bundle_id, 1, row.published_at, body, "POST")


def _touched(stored: StoredResource) -> Touched:
    """As the pull audits a message: the Bundle and what its entries are about."""
    body = stored.body or {}
    return Touched((f"Bundle/{stored.id}",)) + touched_bodies(
        e.get("resource") for e in body.get("entry", []) if isinstance(e, dict))


@router.get("/Bundle/{resource_id}")
async def read_bundle(resource_id: str, request: Request, db: DatabaseDep,
                      settings: SettingsDep, subject: SubjectDep) -> FhirResponse:
    """Read of a Bundle: a message delivered to the caller's organisation reads as the pull
    gave it (at the fullUrl the pull names); anything else as the store reads it."""
    stored = await audited_transaction(
        request, db, subject, lambda s: _delivered(s, subject, settings, resource_id),
        interaction="read", resource_type="Bundle", touched=lambda _s, got: _touched(got),
        reads_only=True)
    return resource_response(stored, base=settings.fhir_base)


@router.get("/Bundle/{resource_id}/_history/{version_id}")
async def vread_bundle(resource_id: str, version_id: str, request: Request, db: DatabaseDep,
                       settings: SettingsDep, subject: SubjectDep) -> FhirResponse:
    """Vread of a Bundle, as `read_bundle` reads it (a delivered message has version 1)."""
    if not version_id.isdigit() or len(version_id) > 18:
        raise NotFoundError(f"Bundle/{resource_id} has no version '{version_id[:40]}'.")
    stored = await audited_transaction(
        request, db, subject,
        lambda s: _delivered(s, subject, settings, resource_id, version_id),
        interaction="vread", resource_type="Bundle", touched=lambda _s, got: _touched(got),
        reads_only=True)
    return resource_response(stored, base=settings.fhir_base)


@router.get("/Bundle/{resource_id}/_history")
async def bundle_history(resource_id: str, request: Request, db: DatabaseDep,
                         settings: SettingsDep, subject: SubjectDep) -> FhirResponse:
    """Instance history of a Bundle: a message delivered to the caller's organisation has
    the one version the pull gave it; anything else as the store has it."""
    pairs = list(request.query_params.multi_items())
    req = parse_history(pairs, default_count=settings.page_size,
                        max_count=settings.max_page_size)

    def versions(s: Session) -> tuple[list[StoredResource], bool]:
        try:
            return store.history(s, subject, resource_type="Bundle", resource_id=resource_id,
                                 count=req.count, offset=req.offset, since=req.since,
                                 at=req.at)
        except NotFoundError:
            one = _delivered(s, subject, settings, resource_id)
        kept = [one] if in_time(one.last_updated_at, None, since=req.since, at=req.at) else []
        return kept[req.offset:req.offset + req.count], len(kept) > req.offset + req.count

    found, more = await audited_transaction(
        request, db, subject, versions, interaction="history-instance",
        resource_type="Bundle", reads_only=True,
        touched=lambda _s, got: Touched((f"Bundle/{resource_id}",)) + sum(
            (_touched(v) for v in got[0] if v.body is not None), Touched()))
    return FhirResponse(fhir.history_bundle(found, more, req, pairs, base=settings.fhir_base,
                                            relative_url=f"Bundle/{resource_id}"))


def _replay_request(body: dict[str, Any]) -> tuple[list[int], str | None, str | None]:
    if body.get("resourceType") != "Parameters":
        raise BadRequestError("$replay takes Parameters: delivery (valueInteger, repeated) or "
                              "message (valueString: the MessageHeader.id), optionally sender "
                              "(valueReference).", expression="resourceType")
    ids: list[int] = []
    message = sender = None
    for p in body.get("parameter", []):
        name = p.get("name") if isinstance(p, dict) else None
        if name == "delivery":
            value = p.get("valueInteger", p.get("valueString"))
            if isinstance(value, bool) or not str(value).isdigit():
                raise BadRequestError("delivery is a delivery id (valueInteger).",
                                      expression="Parameters.parameter")
            ids.append(whole_number("delivery", str(value), most=2**63 - 1))
        elif name == "message" and isinstance(p.get("valueString"), str):
            message = p["valueString"]
        elif name == "sender" and isinstance(p.get("valueReference"), dict):
            sender = str(p["valueReference"].get("reference", "")).removeprefix("Organization/")
        else:
            raise BadRequestError(f"$replay does not take the parameter {name!r} this way.",
                                  expression="Parameters.parameter")
    return ids, message, sender


def _replayed(delivery: DeliveryRow) -> dict[str, Any]:
    part = service.destination(delivery)
    part["part"].insert(0, {"name": "delivery", "valueInteger": delivery.id})
    return part


@router.post("/$replay")
async def replay(request: Request, db: DatabaseDep, settings: SettingsDep,
                 subject: SubjectDep) -> FhirResponse:
    """Queue dead letters again (coordinators of the sender or receiver). Answers
    Parameters with a `destination` per replayed delivery (plus its `delivery` id)."""
    # A FHIR JSON body is required, so a cross-site form cannot replay with a coordinator's
    # session cookie.
    ids, message, sender = _replay_request(await read_body(request, settings))
    done = await audited_transaction(
        request, db, subject,
        lambda s: [_replayed(d) for d in service.replay(
            s, subject, delivery_ids=ids, message_header_id=message, sender_org=sender,
            auditor=get_auditor(request))],
        interaction="operation", operation="$replay", resource_type=None)
    return FhirResponse({"resourceType": "Parameters", "parameter": done})
