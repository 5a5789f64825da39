"""Dispatcher processes for the multi-process tests (importable by spawned children)."""

from __future__ import annotations

import time

from sqlalchemy import func, select

import adapters.registry  # noqa: F401  (the push channel, as a hub process registers it)
import hub.wiring  # noqa: F401
from hub.config import Settings
from hub.db.engine import Database
from hub.delivery.dispatcher import sweep
from hub.messaging.models import DeliveryRow


def sweep_until_none_queued(settings_json: str, start_at: float, deadline: float) -> int:
    """From wall-clock `start_at`, sweep (three claims a pass, so that processes share the
    work) until no delivery is queued or `deadline`; how many this process delivered."""
    settings = Settings.model_validate_json(settings_json)
    db = Database.connect(settings)
    delivered = 0
    try:
        time.sleep(max(0.0, start_at - time.time()))
        while time.time() < deadline:
            delivered += sweep(db, settings, limit=3).delivered
            with db.session(write=False) as s:
                queued = s.scalar(select(func.count()).select_from(DeliveryRow)
                                  .where(DeliveryRow.status == "queued"))
            if not queued:
                break
            time.sleep(settings.delivery_poll_interval)
    finally:
        db.dispose()
    return delivered
