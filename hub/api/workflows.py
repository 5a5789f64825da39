"""Care-coordination operations under /fhir (registered before the generic resource routes):
the figures of user-controlled admission."""

from __future__ import annotations

from fastapi import APIRouter, Request

from hub.api.deps import DatabaseDep, SubjectDep, audited_transaction
from hub.api.responses import FhirResponse
from hub.audit.recorder import Touched
from hub.workflows import selfadmission

router = APIRouter(prefix="/fhir")


@router.get("/ServiceRequest/{agreement_id}/$self-admission-figures")
async def agreement_figures(agreement_id: str, request: Request, db: DatabaseDep,
                            subject: SubjectDep) -> FhirResponse:
    """Parameters: requests, admissions, share admitted, days used under one agreement."""
    result = await audited_transaction(
        request, db, subject, lambda s: selfadmission.agreement_figures(
            s, subject, agreement_id=agreement_id),
        interaction="operation", resource_type="ServiceRequest",
        operation="$self-admission-figures",
        touched=lambda _s, r: Touched((f"ServiceRequest/{agreement_id}",), tuple(
            p["valueReference"]["reference"] for p in r["parameter"]
            if p["name"] == "patient")))
    return FhirResponse(result)


@router.get("/Location/{unit_id}/$self-admission-figures")
async def unit_figures(unit_id: str, request: Request, db: DatabaseDep,
                       subject: SubjectDep) -> FhirResponse:
    """Parameters: the same figures over every agreement on one unit, and its beds."""
    result = await audited_transaction(
        request, db, subject, lambda s: selfadmission.unit_figures(s, subject, unit_id=unit_id),
        interaction="operation", resource_type="Location", operation="$self-admission-figures",
        touched=lambda _s, _r: Touched((f"Location/{unit_id}",), ()))
    return FhirResponse(result)
