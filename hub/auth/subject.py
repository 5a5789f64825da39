"""Who is acting. Every service call takes a Subject first; access control builds on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SubjectKind = Literal["client", "user", "system", "open"]


@dataclass(frozen=True)
class Subject:
    """The acting party of one request or job."""

    kind: SubjectKind
    id: str
    organization_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    role: str | None = None  # for people: coordinator, auditor or admin

    @property
    def sees_everything(self) -> bool:
        """The hub itself (and the open API before access control) is not isolated."""
        return self.kind in ("system", "open")

    @classmethod
    def hub_itself(cls) -> Subject:
        """The hub's own jobs (migrations, seeding, scheduler)."""
        return cls("system", "carehub", None, frozenset({"system/*.*"}))

    @classmethod
    def open_access(cls) -> Subject:
        """The caller of an API without token checks (until access control lands)."""
        return cls("open", "anonymous", None, frozenset({"system/*.*"}))
