"""A resource sent again exactly as stored keeps its version; changed content makes a new one."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import SHARED
from tests.messaging.test_story import hub, load, post  # noqa: F401  (the fixture)

Hub = dict[str, TestClient]
ADMISSION = SHARED / "examples" / "03-admission-notice.json"


def _again(message: dict[str, Any]) -> dict[str, Any]:
    """The same content as a new message (a new MessageHeader.id)."""
    out = copy.deepcopy(message)
    out["entry"][0]["resource"]["id"] = str(uuid.uuid4())
    return out


def _resource(message: dict[str, Any], rtype: str) -> dict[str, Any]:
    found: dict[str, Any] = next(e["resource"] for e in message["entry"]
                                 if e["resource"]["resourceType"] == rtype)
    return found


def _accepted(hub: Hub, message: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    r = post(hub, message)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def _history(hub: Hub, rtype: str) -> list[dict[str, Any]]:  # noqa: F811
    found = hub["jaeren-dps"].get(f"/fhir/{rtype}").json()["entry"]
    assert len(found) == 1
    rid = found[0]["resource"]["id"]
    entries = hub["jaeren-dps"].get(f"/fhir/{rtype}/{rid}/_history").json()["entry"]
    return [e["resource"] for e in entries]


def _queued(answer: dict[str, Any]) -> list[str]:
    return [i["diagnostics"] for i in answer["entry"][1]["resource"]["issue"]
            if i["diagnostics"].startswith("Queued for Organization/")]


def test_a_resource_sent_again_unchanged_keeps_its_version(hub: Hub) -> None:  # noqa: F811
    first = load(ADMISSION)
    _accepted(hub, first)
    second = _accepted(hub, _again(first))
    # stored once: the history says what changed, not how often it was sent
    assert [p["meta"]["versionId"] for p in _history(hub, "Patient")] == ["1"]
    assert [e["meta"]["versionId"] for e in _history(hub, "Encounter")] == ["1"]
    # ... yet the message itself is accepted, handled and routed as before
    said = " ".join(i["diagnostics"] for i in second["entry"][1]["resource"]["issue"])
    assert "Admission recorded: Encounter/" in said
    assert len(_queued(second)) == 1

def test_changed_content_makes_a_new_version_and_only_of_what_changed(
        hub: Hub) -> None:  # noqa: F811
    first = load(ADMISSION)
    _accepted(hub, first)
    moved = _again(first)
    patient = _resource(moved, "Patient")
    patient["address"][0]["line"] = ["Kirkegata 7"]
    _accepted(hub, moved)
    versions = _history(hub, "Patient")
    assert [p["meta"]["versionId"] for p in versions] == ["2", "1"]
    assert [p["address"][0]["line"] for p in versions] == [["Kirkegata 7"], ["Storgata 1"]]
    assert [e["meta"]["versionId"] for e in _history(hub, "Encounter")] == ["1"]
    # the order of keys is no change of content
    reordered = _again(moved)
    patient = _resource(reordered, "Patient")
    items = list(patient.items())
    patient.clear()
    patient.update(dict(reversed(items)))
    _accepted(hub, reordered)
    assert [p["meta"]["versionId"] for p in _history(hub, "Patient")] == ["2", "1"]
