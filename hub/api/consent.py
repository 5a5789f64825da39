"""Consent operations under /fhir (registered before the generic resource routes)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from hub.api.deps import DatabaseDep, SubjectDep, in_transaction
from hub.api.responses import FhirResponse
from hub.consent import service as consent_service

router = APIRouter(prefix="/fhir")


@router.get("/Patient/{patient_id}/$disclosure-check")
async def disclosure_check(patient_id: str, db: DatabaseDep, subject: SubjectDep,
                           recipient: str = Query(...), event: str | None = Query(None)
                           ) -> FhirResponse:
    """Parameters: decision (permit | deny), basis, reason."""
    result = await in_transaction(db, lambda s: consent_service.disclosure_check(
        s, subject, patient_id=patient_id, recipient=recipient, event=event), write=False)
    return FhirResponse(result)
