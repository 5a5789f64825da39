"""Admin commands' audit records (`hub org ...`, `hub user ...`, `hub deliveries replay`):
the operator running `hub`, what they asked, and whether it was refused."""

from __future__ import annotations

import getpass
import os

from sqlalchemy.orm import Session

from hub.audit.events import ADMIN, admin_event
from hub.audit.recorder import Auditor


def operator() -> str:
    """The OS user running the command: the agent of its audit record."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return f"uid-{os.getuid()}"


def record_admin(session: Session, auditor: Auditor, text: str, target: str | None, *,
                 failed: bool = False) -> int:
    """Record the admin command `text` (on `target`, e.g. Organization/x) in the caller's
    transaction, as refused when `failed`; its seq."""
    who = operator()
    return auditor.event(session, admin_event(who, text, target, outcome="4" if failed else "0"),
                         agent=f"Operator/{who}", subtype=ADMIN)
