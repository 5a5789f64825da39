"""Consent operations under /fhir (registered before the generic resource routes)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from hub.api.deps import (
    DatabaseDep,
    SettingsDep,
    SubjectDep,
    audited_transaction,
    settle_reads,
)
from hub.api.responses import FhirResponse
from hub.audit.recorder import Touched
from hub.consent import service as consent_service
from hub.consent import trail

router = APIRouter(prefix="/fhir")


@router.get("/Patient/{patient_id}/$disclosure-check")
async def disclosure_check(patient_id: str, request: Request, db: DatabaseDep,
                           settings: SettingsDep, subject: SubjectDep,
                           recipient: str = Query(...),
                           event: str | None = Query(None)) -> FhirResponse:
    """Parameters: decision (permit | deny), basis, reason."""
    result = await audited_transaction(
        request, db, subject, lambda s: consent_service.disclosure_check(
            s, subject, settings, patient_id=patient_id, recipient=recipient, event=event),
        interaction="operation", resource_type="Patient", operation="$disclosure-check",
        query=str(request.url.query),
        touched=lambda _s, _r: Touched((), (f"Patient/{patient_id}",)), reads_only=True)
    return FhirResponse(result)


@router.get("/Patient/{patient_id}/$consent-trail")
async def consent_trail(patient_id: str, request: Request, db: DatabaseDep,
                        settings: SettingsDep, subject: SubjectDep) -> FhirResponse:
    """Every Consent version and disclosure decision for the patient, oldest first."""
    await settle_reads(request)  # the trail lists disclosures, reads' included
    result = await audited_transaction(
        request, db, subject, lambda s: trail.consent_trail(
            s, subject, patient_id=patient_id, fhir_base=settings.fhir_base),
        interaction="operation", resource_type="Patient", operation="$consent-trail",
        touched=lambda _s, _r: Touched((), (f"Patient/{patient_id}",)), reads_only=True)
    return FhirResponse(result)
