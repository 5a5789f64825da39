"""A conditional reference (`Type?criteria`) is resolved only in a transaction or batch; in a
message it names nothing, so the message is refused (422 naming the element) and nothing of
it is kept, rather than a dangling reference stored."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import SHARED
from tests.messaging.test_story import hub, load, post  # noqa: F401  (the fixture)

ADMISSION = SHARED / "examples" / "03-admission-notice.json"


def test_a_message_with_a_conditional_reference_is_422_and_nothing_is_kept(
        hub: dict[str, TestClient]) -> None:  # noqa: F811
    message = load(ADMISSION)
    encounter = message["entry"][1]["resource"]
    assert encounter["resourceType"] == "Encounter"
    encounter["basedOn"] = [
        {"reference": "ServiceRequest?identifier=urn:oid:2.16.578.1.12.4.1.2.55555|sr-1"}]
    r = post(hub, message)
    assert r.status_code == 422, r.text
    assert "Bundle.entry[1].resource.basedOn[0].reference" in r.text
    dps = hub["jaeren-dps"]
    assert dps.get("/fhir/Encounter").json()["entry"] == []
    assert dps.get("/fhir/Patient").json()["entry"] == []
    # control: the example as written (a fullUrl reference) is accepted
    assert post(hub, load(ADMISSION)).status_code == 200
    assert len(dps.get("/fhir/Encounter").json()["entry"]) == 1
