"""$consent-trail: consent versions and disclosure decisions, for custodians and auditors."""

from __future__ import annotations

from datetime import date

from fastapi.testclient import TestClient

from hub.config import Settings
from hub.db.engine import Database
from tests.access_clients import other_client
from tests.conftest import TEST_ORG
from tests.factories import consent, encounter, fnr, patient
from tests.ui.conftest import browser, make_user, sign_in  # noqa: F401 (fixtures)


def test_custodian_sees_versions_and_decisions_in_time_order(
        client: TestClient, settings: Settings, database: Database) -> None:
    pid = client.post("/fhir/Patient", json=patient(fnr(date(1969, 11, 13)))).json()["id"]
    enc = client.post("/fhir/Encounter", json=encounter(f"Patient/{pid}")).json()["id"]
    body = consent(pid, "time-kommune")
    body["organization"] = [{"reference": f"Organization/{TEST_ORG}"}]
    cid = client.post("/fhir/Consent", json=body).json()["id"]
    with other_client(settings, database, "time-kommune") as time:
        assert time.get(f"/fhir/Encounter/{enc}").status_code == 200  # disclosed: permit
        client.put(f"/fhir/Consent/{cid}", json={**body, "id": cid, "status": "inactive"})
        assert time.get(f"/fhir/Encounter/{enc}").status_code == 404  # revoked: deny
        assert time.get(f"/fhir/Patient/{pid}/$consent-trail").status_code == 404
    r = client.get(f"/fhir/Patient/{pid}/$consent-trail")
    assert r.status_code == 200, r.text
    trail = r.json()
    assert trail["type"] == "collection"
    kinds = [(e["resource"]["resourceType"], e["resource"].get("status") or
              _decision(e["resource"])) for e in trail["entry"]]
    assert kinds == [("Consent", "active"), ("AuditEvent", "permit"), ("Consent", "inactive"),
                     ("AuditEvent", "deny")], kinds


def _decision(event: dict) -> str:  # type: ignore[type-arg]
    for entity in event.get("entity", []):
        for detail in entity.get("detail", []):
            if detail.get("type") == "decision":
                return str(detail.get("valueString"))
    return "?"


def test_a_stranger_gets_404(client: TestClient) -> None:
    assert client.get("/fhir/Patient/nobody/$consent-trail").status_code == 404


def test_auditor_reads_the_trail_and_a_coordinator_does_not(
        client: TestClient, database: Database, browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    pid = client.post("/fhir/Patient", json=patient(fnr(date(1980, 2, 2)))).json()["id"]
    body = consent(pid, "time-kommune")
    body["organization"] = [{"reference": f"Organization/{TEST_ORG}"}]
    client.post("/fhir/Consent", json=body)
    make_user(database, "revisor", role="auditor")
    make_user(database, "koordinator", role="coordinator", organization_id=TEST_ORG)
    auditor = browser()
    assert sign_in(auditor, "revisor").status_code == 303
    trail = auditor.get(f"/fhir/Patient/{pid}/$consent-trail")
    assert trail.status_code == 200, trail.text
    assert [e["resource"]["resourceType"] for e in trail.json()["entry"]] == ["Consent"]
    coordinator = browser()
    assert sign_in(coordinator, "koordinator").status_code == 303
    assert coordinator.get(f"/fhir/Patient/{pid}/$consent-trail").status_code == 404
