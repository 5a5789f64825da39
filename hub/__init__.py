"""CareHub: a FHIR message hub between a mental-health centre and its municipalities."""

__version__ = "0.1.0"
