"""Where the hub's data files are, the same in a checkout and in an installed wheel.

`fhir_profiles/` (CONTRACT: the hub's CodeSystems, ValueSets, StructureDefinitions,
MessageDefinitions and SearchParameters) stays at the top of the repository; `hub/fhir_profiles`
is a symlink to it, so setuptools copies the files into the wheel as package data of `hub`
and an installed hub finds them beside its code rather than three directories up.
"""

from __future__ import annotations

from pathlib import Path

PROFILES_DIR = Path(__file__).resolve().parent.parent / "fhir_profiles"
"""The hub's conformance resources (JSON)."""
