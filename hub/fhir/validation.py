"""The one place resources are judged valid: FHIR structure, ids, Norwegian identifiers."""

from __future__ import annotations

import re
from typing import Any

from hub.errors import Issue
from hub.fhir.identifiers import identifier_problems
from hub.fhir.structure import structure_issues

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def validate_resource(resource: dict[str, Any]) -> list[Issue]:
    """Every problem that makes `resource` unacceptable; [] when it may be stored."""
    issues = structure_issues(resource)
    rtype = resource.get("resourceType")
    rid = resource.get("id")
    if rid is not None and (not isinstance(rid, str) or not ID_RE.match(rid)):
        issues.append(Issue(
            f"{rtype}.id '{rid}' is not a valid FHIR id (1-64 letters, digits, '-' or '.').",
            "value", "error", f"{rtype}.id"))
    issues.extend(
        Issue(f"{where}: {reason}", "value", "error", where)
        for where, reason in identifier_problems(resource)
    )
    return issues
