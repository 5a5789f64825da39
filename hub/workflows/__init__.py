"""The care-coordination rules behind the events of CONTRACT section 4 (issue 6).

Each module registers its handlers with hub.messaging.handlers.handles; importing this
package registers them all. A rule that a message breaks raises InvalidResourceError (422)
with a diagnostics line a clerk can act on, and nothing of the message is kept.

- careplan: the individual plan (care-plan-shared)
- meetings: network, cooperation and responsibility meetings and their answers
- selfadmission: user-controlled admission agreements, requests, answers and figures
- tasks: admission, the ready-for-discharge dialogue, and who may change a Task's status
- discharge: the discharge notice's follow-up plan and the follow-up contact
- followup: the follow-up checks after a discharge, escalated when overdue
- deadlines: unanswered ready-for-discharge, meeting reminders, consent expiry
- timed: the handlers that start, move and cancel those checks as messages arrive
"""

from hub.workflows import (  # noqa: F401
    careplan,
    deadlines,
    discharge,
    followup,
    meetings,
    selfadmission,
    tasks,
    timed,
)
