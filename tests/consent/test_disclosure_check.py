"""$disclosure-check over HTTP (CONTRACT section 5)."""

from __future__ import annotations

from datetime import date

from fastapi.testclient import TestClient

from tests.conftest import TEST_ORG
from tests.factories import consent, fnr, patient


def _params(r) -> dict[str, object]:  # type: ignore[no-untyped-def]
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "Parameters"
    out: dict[str, object] = {}
    for p in body["parameter"]:
        value = next(v for k, v in p.items() if k.startswith("value"))
        out[p["name"]] = value
    return out


def test_permit_by_consent_then_deny_after_revocation(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient(fnr(date(1969, 11, 13)))).json()["id"]
    url = f"/fhir/Patient/{pid}/$disclosure-check"
    ask = {"recipient": "Organization/time-kommune", "event": "follow-up-contact"}
    before = _params(client.get(url, params=ask))
    assert before["decision"] == "deny"
    assert "time-kommune" in str(before["reason"])
    body = consent(pid, "time-kommune")
    body["organization"] = [{"reference": f"Organization/{TEST_ORG}"}]
    cid = client.post("/fhir/Consent", json=body).json()["id"]
    after = _params(client.get(url, params=ask))
    assert after["decision"] == "permit"
    assert after["basis"] == {"reference": f"Consent/{cid}"}
    client.put(f"/fhir/Consent/{cid}", json={**body, "id": cid, "status": "inactive"})
    assert _params(client.get(url, params=ask))["decision"] == "deny"


def test_legal_basis_without_consent(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    r = client.get(f"/fhir/Patient/{pid}/$disclosure-check",
                   params={"recipient": "Organization/time-kommune",
                           "event": "admission-notice"})
    out = _params(r)
    assert out["decision"] == "permit"
    assert out["basis"] == "statutory-notification"


def test_unknown_event_and_foreign_patient(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient()).json()["id"]
    bad = client.get(f"/fhir/Patient/{pid}/$disclosure-check",
                     params={"recipient": "Organization/x", "event": "party"})
    assert bad.status_code == 400
    missing = client.get("/fhir/Patient/nobody/$disclosure-check",
                         params={"recipient": "Organization/x"})
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"
