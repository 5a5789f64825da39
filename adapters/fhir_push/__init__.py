"""FHIR messaging push: POST the message Bundle to the receiver's Endpoint (CONTRACT 6)."""

from adapters.fhir_push.push import FhirPush

__all__ = ["FhirPush"]
