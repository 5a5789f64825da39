"""Minimum necessary: every event that can go on a legal basis lists its administrative
elements, and what is not listed is left out (CONTRACT section 5)."""

from __future__ import annotations

from hub.config import Settings
from hub.consent import bases
from hub.consent.minimum import administrative, trim_message


def test_every_legal_basis_event_lists_its_administrative_elements() -> None:
    settings = Settings()
    events = {e for b in bases.legal_bases(settings) for e in b.events}
    assert "admission-notice" in events
    for event in sorted(events):
        listed = administrative(event)
        assert listed, f"MessageDefinition {event} lists no administrative-element"
        assert "Patient" in listed, event


def test_an_event_without_a_list_sends_the_header_alone() -> None:
    bundle = {"resourceType": "Bundle", "type": "message", "entry": [
        {"resource": {"resourceType": "MessageHeader", "id": "h"}},
        {"resource": {"resourceType": "Patient", "id": "p", "name": [{"family": "X"}]}}]}
    assert [e["resource"]["resourceType"] for e in
            trim_message(bundle, "no-such-event")["entry"]] == ["MessageHeader"]
    trimmed = trim_message(bundle, "admission-notice")
    patient = trimmed["entry"][1]["resource"]
    assert patient["name"] == [{"family": "X"}]
    assert "SUBSETTED" in str(patient["meta"])
