"""The hub's own notices are part of the conformance resources (an extension of CONTRACT
section 4): each has a code in message-event, a MessageDefinition, and the header profile
lets it go without a sender, which no organisation's message may do."""

from __future__ import annotations

import copy

import pytest

from hub.fhir.profiles import BASE, conformance
from hub.fhir.validation import validate_message
from hub.fhir.vocab import EVENTS
from hub.messaging.outbound import HUB_NOTICES
from tests.scheduler.story import example


@pytest.mark.parametrize("event", HUB_NOTICES)
def test_each_notice_is_defined(event: str) -> None:
    reg = conformance()
    codes = reg.code_system_codes(f"{BASE}/CodeSystem/message-event")
    assert codes is not None
    assert event in codes
    expanded = reg.value_set_codes(f"{BASE}/ValueSet/message-event")
    assert expanded is not None
    assert (f"{BASE}/CodeSystem/message-event", event) in expanded
    definition = reg.message_definition(event)
    assert definition is not None
    assert definition["focus"][0]["min"] == 1
    assert event not in EVENTS  # organisations cannot post it


def test_only_notices_go_without_a_sender() -> None:
    notice = example(16)
    assert validate_message(notice) == []
    message = copy.deepcopy(example(14))
    del message["entry"][0]["resource"]["sender"]
    errors = validate_message(message)
    assert [e.expression for e in errors] == ["Bundle.entry[0].resource"]
