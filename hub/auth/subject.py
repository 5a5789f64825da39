"""Who is acting. Every service call takes a Subject first; access control builds on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SubjectKind = Literal["client", "user", "system", "open"]


@dataclass(frozen=True)
class Subject:
    """The acting party of one request or job.

    Authority is always someone's: a subject with an organisation sees and changes what that
    organisation may, whatever its kind (the hub working for an organisation included). Only
    the hub as itself (no organisation) is not isolated, and it writes only its own notices
    and the directory (hub/auth/isolation.py)."""

    kind: SubjectKind
    id: str
    organization_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    role: str | None = None  # for people: coordinator, auditor or admin

    @property
    def sees_everything(self) -> bool:
        """The hub itself for no organisation."""
        return self.kind == "system" and self.organization_id is None

    @property
    def is_hub(self) -> bool:
        """The hub acting as itself, for no organisation."""
        return self.kind == "system" and self.organization_id is None

    @classmethod
    def hub_itself(cls) -> Subject:
        """The hub's own jobs (migrations, seeding, delivery, its own notices)."""
        return cls("system", "carehub", None, frozenset({"system/*.*"}))

    @classmethod
    def working_for(cls, org_id: str, job: str) -> Subject:
        """The hub doing `job` for Organization/org_id: it sees and changes what that
        organisation may, nothing more (CONTRACT section 3)."""
        return cls("system", f"{job}:{org_id}", org_id, frozenset({"system/*.*"}))
