"""POST /fhir/$process-message (CONTRACT section 4)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from hub.api.deps import (
    DatabaseDep,
    SettingsDep,
    SubjectDep,
    audited_work,
    in_write_turn,
    read_body,
)
from hub.api.responses import FhirResponse
from hub.audit.recorder import Touched
from hub.messaging.intake import Outcome, check_message, process_message

router = APIRouter(prefix="/fhir")


@router.post("/$process-message")
async def process_message_route(request: Request, db: DatabaseDep, settings: SettingsDep,
                                subject: SubjectDep) -> FhirResponse:
    """Accept a message Bundle: 200 with the response message, or an OperationOutcome."""
    bundle = await read_body(request, settings)

    def work() -> Outcome:
        # Validation needs no database: done before the write transaction (on SQLite, the
        # database's one write lock), which is then held only for the work that needs it;
        # on the same worker thread, to save a thread hop.
        checked = check_message(bundle)
        return audited_work(
            request, db, subject,
            lambda s: process_message(s, subject, settings, bundle=bundle, checked=checked),
            interaction="operation", resource_type="Bundle", operation="$process-message",
            touched=lambda _s, out: Touched(out.resources, out.patients))

    outcome = await in_write_turn(request, work)
    return FhirResponse(outcome.response)
