"""The hub's error tree. Everything below the endpoints raises these, never HTTPException.

HubError                      -> OperationOutcome, status from the class
├── BadRequestError           400 unparsable or structurally wrong request
├── UnauthorizedError         401
├── ForbiddenError            403
├── NotFoundError             404 unknown type or id
├── MethodNotAllowedError     405 interaction not supported on the type (Allow header)
├── NotAcceptableError        406 a format other than FHIR JSON asked for
├── ConflictError             409
├── GoneError                 410 deleted
├── PreconditionFailedError   412 If-Match / conditional mismatch
├── PayloadTooLargeError      413
├── UnsupportedMediaTypeError 415
├── InvalidResourceError      422 well-formed but not valid (one or more issues)
├── AuditUnavailableError     503 the audit record of a read could not be committed
├── BusyError                 503 the process holds as many writes as it takes (Retry-After)
└── DatabaseUnavailableError  503 the database cannot be reached or opened (the CLI's sentence)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: what is wrong, where, in words a person can act on."""

    diagnostics: str
    code: str = "invalid"
    severity: str = "error"
    expression: str | None = None

    def to_fhir(self) -> dict[str, object]:
        """The issue as FHIR JSON."""
        out: dict[str, object] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            out["expression"] = [self.expression]
        return out


class HubError(Exception):
    """Base of every domain error; rendered as an OperationOutcome with `status`."""

    status: int = 500
    code: str = "exception"

    def __init__(
        self,
        diagnostics: str,
        *,
        expression: str | None = None,
        issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.expression = expression
        self.issues = issues or [Issue(diagnostics, self.code, "error", expression)]
        self.headers = headers or {}

    def outcome(self) -> dict[str, object]:
        """The OperationOutcome body for this error."""
        return operation_outcome(self.issues)


class BadRequestError(HubError):
    """400: the request cannot be parsed or has the wrong shape."""

    status, code = 400, "structure"


class UnauthorizedError(HubError):
    """401: no or bad credentials."""

    status, code = 401, "login"


class ForbiddenError(HubError):
    """403: the subject may not do this."""

    status, code = 403, "forbidden"


class NotFoundError(HubError):
    """404: unknown resource type or id."""

    status, code = 404, "not-found"


class MethodNotAllowedError(HubError):
    """405: the interaction is not supported for this type."""

    status, code = 405, "not-supported"


class NotAcceptableError(HubError):
    """406: the client asks for a format the hub does not write (XML, Turtle)."""

    status, code = 406, "not-supported"


class ConflictError(HubError):
    """409: the request conflicts with the current state."""

    status, code = 409, "conflict"


class GoneError(HubError):
    """410: the resource was deleted."""

    status, code = 410, "deleted"


class PreconditionFailedError(HubError):
    """412: a version or conditional precondition does not hold."""

    status, code = 412, "conflict"


class PayloadTooLargeError(HubError):
    """413: the body exceeds HUB_MAX_BODY_BYTES."""

    status, code = 413, "too-costly"


class UnsupportedMediaTypeError(HubError):
    """415: the body is not FHIR JSON."""

    status, code = 415, "not-supported"


class InvalidResourceError(HubError):
    """422: well-formed JSON that is not a valid resource; one issue per problem."""

    status, code = 422, "invalid"


class AuditUnavailableError(HubError):
    """503: the audit trail could not take the record of a read, so nothing is disclosed
    (hub/audit/spool.py); the request may be sent again."""

    status, code = 503, "transient"


class BusyError(HubError):
    """503: the process already holds HUB_WRITE_BACKLOG write requests; nothing was done and
    the request may be sent again after its Retry-After."""

    status, code = 503, "transient"


class DatabaseUnavailableError(HubError):
    """503: the database of HUB_DATABASE_URL cannot be reached or opened (hub.db.migrate, for
    the command-line tools: one sentence instead of the driver's traceback)."""

    status, code = 503, "transient"


def operation_outcome(issues: list[Issue]) -> dict[str, object]:
    """An OperationOutcome resource from issues."""
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


def information(text: str, code: str = "informational") -> dict[str, object]:
    """An OperationOutcome with one informational issue (for 2xx answers that need one)."""
    return operation_outcome([Issue(text, code, "information")])
