"""The one place resources are judged valid: FHIR structure, the base R4 spec's required
bindings, ids, Norwegian identifiers, and,
on request, the hub's profiles (hub.fhir.profiles) and the rules for messages."""

from __future__ import annotations

import re
from typing import Any

from hub.errors import Issue
from hub.fhir import refs
from hub.fhir.identifiers import identifier_problems
from hub.fhir.profiles import conformance, message_issues, message_resources, validate_against
from hub.fhir.structure import binding_issues, structure_issues

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}\Z")  # \Z: "$" also matches before a last "\n"

__all__ = ["is_known_profile", "validate_against", "validate_message", "validate_resource"]


def validate_resource(resource: dict[str, Any], *, profile: str | None = None) -> list[Issue]:
    """Every problem that makes `resource` unacceptable; [] when it may be stored.
    With `profile` (a canonical url of ours), also every departure from that profile."""
    issues = structure_issues(resource) + binding_issues(resource)
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
    if rtype != "Bundle" and _any_conditional(resource):  # a transaction's entries may
        issues.extend(_conditional_references(resource, str(rtype)))  # hold them: it resolves
    if profile is not None:
        issues = _merged(issues, validate_against(resource, profile))
    return issues


def _any_conditional(node: Any) -> bool:
    """Whether a conditional reference is anywhere in `node` (a walk that builds no paths:
    the paths are made only for a resource that has one)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            for key, value in item.items():
                if key == "reference" and refs.conditional(value) is not None:
                    return True
                if type(value) is dict or type(value) is list:
                    stack.append(value)
        elif type(item) is list:
            stack.extend(v for v in item if type(v) is dict or type(v) is list)
    return False


def _conditional_references(node: Any, where: str) -> list[Issue]:
    """A conditional reference (`Type?criteria`) outside a transaction or batch names
    nothing (FHIR resolves it only there), so it is refused rather than stored verbatim."""
    if isinstance(node, list):
        return [i for n, v in enumerate(node) for i in _conditional_references(v, f"{where}[{n}]")]
    if not isinstance(node, dict):
        return []
    found = []
    for key, value in node.items():
        here = f"{where}.{key}"
        if key == "reference" and refs.conditional(value) is not None:
            found.append(Issue(
                f"{here} is the conditional reference '{str(value)[:200]}', a search that is "
                "resolved only in a transaction or batch Bundle (POST /fhir); here it names "
                "nothing. Refer to the resource as Type/id.", "value", "error", here))
        else:
            found.extend(_conditional_references(value, here))
    return found


def is_known_profile(url: str) -> bool:
    """True when `url` is one of the hub's StructureDefinitions (fhir_profiles/)."""
    found = conformance().by_url(url)
    return found is not None and found.get("resourceType") == "StructureDefinition"


def validate_message(bundle: dict[str, Any], *, warnings: bool = False) -> list[Issue]:
    """Every problem that makes a message Bundle unacceptable to $process-message (CONTRACT
    section 4): each entry's own validity (as `validate_resource`), the header, the event's
    MessageDefinition and profiles, and references inside the bundle. [] when acceptable.
    With `warnings`, also what is accepted but questionable (severity warning)."""
    profiled = message_issues(bundle)
    own: list[Issue] = []
    for index, resource in message_resources(bundle):
        own.extend(_in_entry(index, str(resource["resourceType"]), i)
                   for i in validate_resource(resource))
    issues = _merged(own, profiled)
    return issues if warnings else [i for i in issues if i.severity in ("error", "fatal")]


def _in_entry(index: int, rtype: str, issue: Issue) -> Issue:
    """The issue of a resource, its expression made relative to the message Bundle."""
    prefix = f"Bundle.entry[{index}].resource"
    expr = issue.expression
    if expr is None or expr == rtype:
        expr = prefix
    elif expr.startswith((f"{rtype}.", f"{rtype}[")):
        expr = prefix + expr[len(rtype):]
    else:
        expr = f"{prefix}.{expr}"
    return Issue(issue.diagnostics, issue.code, issue.severity, expr)


def _merged(base: list[Issue], profiled: list[Issue]) -> list[Issue]:
    """Profile issues first; a base issue about an element a profile issue already names
    (e.g. a missing required element, said twice) is dropped."""
    named = {i.expression for i in profiled}
    return [*profiled, *(i for i in base if i.expression not in named)]
