"""What every hub process loads before it works (the composition root's one import).

The lower layers take what the upper ones register instead of importing them: the store asks
the visibility rule the consent gate registers (hub/store/visibility.py), intake runs the
handlers the flows register (hub/messaging/handlers.py), the scheduler's sweep runs the
actions the flows and delivery register (hub/scheduler/actions.py). hub.app, hub.cli and the
tests import this module, so no process works with a rule missing.
"""

from __future__ import annotations

import hub.consent.gate  # noqa: F401  (the consent gate: what a subject may see)
import hub.delivery.scheduled  # noqa: F401  (delivery's own timed check)
import hub.workflows  # noqa: F401  (the flows, their handlers and timed checks)
