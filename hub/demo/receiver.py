"""Stand-ins for the organisations' own systems, served beside the hub by `hub demo` only.

Each demo organisation's messaging Endpoint is `{base}/demo/inbox/{org}`: the hub's
dispatcher pushes message Bundles there as it would to a real system. Jæren DPS and Time
kommune take every message. Klepp kommune's system turns a message down the first time it
sees it (as a system does while its patient register is being updated), so its deliveries
become dead letters that Klepp's coordinator can replay from /ui; a replayed one is taken.
`GET /demo/inbox/{org}` lists what arrived.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

REFUSES_FIRST = frozenset({"klepp-kommune"})

router = APIRouter(prefix="/demo/inbox", include_in_schema=False)


def _inbox(request: Request, org_id: str) -> list[dict[str, Any]]:
    state = request.app.state
    if not hasattr(state, "demo_inboxes"):
        state.demo_inboxes = {}
    inboxes: dict[str, list[dict[str, Any]]] = state.demo_inboxes
    return inboxes.setdefault(org_id, [])


@router.post("/{org_id}")
async def receive(org_id: str, request: Request) -> JSONResponse:
    """Take a pushed message Bundle (or, for Klepp kommune, refuse it the first time)."""
    try:
        bundle = await request.json()
        header = bundle["entry"][0]["resource"]
        seen = {"id": str(header["id"]), "event": str(header["eventCoding"]["code"])}
    except (ValueError, KeyError, IndexError, TypeError):
        return JSONResponse({"error": "not a FHIR message Bundle"}, status_code=400)
    inbox = _inbox(request, org_id)
    first = all(m["id"] != seen["id"] for m in inbox)
    inbox.append({**seen, "taken": not (first and org_id in REFUSES_FIRST)})
    if first and org_id in REFUSES_FIRST:
        return JSONResponse({"error": "patient register is being updated; send it again"},
                            status_code=422)
    return JSONResponse({"received": seen["id"]})


@router.get("/{org_id}")
async def list_inbox(org_id: str, request: Request) -> JSONResponse:
    """What reached this organisation's stand-in system, oldest first."""
    return JSONResponse(_inbox(request, org_id))
