"""What the store hands back: one version of one resource, ready to serve."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hub.store.codec import decode_body
from hub.store.dates import format_instant


@dataclass(frozen=True)
class StoredResource:
    """One version of a resource; `body` is None for a deletion."""

    resource_type: str
    id: str
    version_id: int
    last_updated_at: datetime
    body: dict[str, Any] | None
    method: str = "PUT"

    @property
    def etag(self) -> str:
        """Weak ETag of this version."""
        return f'W/"{self.version_id}"'

    @property
    def last_modified(self) -> str:
        """meta.lastUpdated as a FHIR instant."""
        return format_instant(self.last_updated_at)

    @property
    def relative_url(self) -> str:
        """Type/id."""
        return f"{self.resource_type}/{self.id}"

    def stored_text(self, *, created: bool) -> str:
        """What a write of this version did, in words (`Prefer: return=OperationOutcome`)."""
        return (f"Created {self.relative_url} as version {self.version_id}." if created
                else f"{self.relative_url} is at version {self.version_id}.")

    @classmethod
    def from_row(
        cls,
        resource_type: str,
        logical_id: str,
        version_id: int,
        at: datetime,
        body: bytes | None,
        method: str = "PUT",
    ) -> StoredResource:
        """Build from stored columns."""
        return cls(resource_type, logical_id, version_id, at,
                   decode_body(body) if body is not None else None, method)


@dataclass(frozen=True)
class WriteResult:
    """The outcome of a create or update: the version written, or the one already there."""

    stored: StoredResource
    created: bool
    # conditional create matched an existing resource, or an update (keep_unchanged) said
    # what the current version says: nothing was written
    unchanged: bool = False
    # False: `stored` is the Patient the hub keeps for the person a create named, which the
    # caller may not read (CONTRACT section 3): answer its location, never its body
    readable: bool = True
