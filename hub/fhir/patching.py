"""JSON Patch (RFC 6902) applied to a resource, for PATCH: the patched copy, or an error a
client can act on. The result is judged like any update (hub.fhir.validation)."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer

from hub.errors import BadRequestError, InvalidResourceError


def apply_json_patch(resource: dict[str, Any], ops: list[dict[str, Any]], *,
                     where: str) -> dict[str, Any]:
    """`resource` with `ops` applied (a copy). Raises BadRequestError (400) for a malformed
    patch, InvalidResourceError (422) when it does not apply to `resource` (a missing path,
    a failed `test`)."""
    try:
        patch = jsonpatch.JsonPatch(ops)
    except (jsonpatch.InvalidJsonPatch, TypeError) as exc:
        raise BadRequestError(f"The JSON Patch is malformed: {exc}.") from None
    try:
        patched = patch.apply(copy.deepcopy(resource))
    except jsonpatch.InvalidJsonPatch as exc:
        raise BadRequestError(f"The JSON Patch is malformed: {exc}.") from None
    except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPatchTestFailed,
            jsonpointer.JsonPointerException) as exc:
        raise InvalidResourceError(f"The JSON Patch does not apply to {where}: {exc}.") from None
    if not isinstance(patched, dict):
        raise InvalidResourceError(f"The JSON Patch would replace {where} with something that "
                                   "is not a resource.")
    return patched
