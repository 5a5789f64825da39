"""An organisation that holds records about a person may see who they are (CONTRACT section
3), and, without the person's consent, no more: the probe of session 22 (finding F1) showed
that any organisation knowing a fødselsnummer could link to the kept Patient, write a Flag
about it, and then read the person's address. Now such a holder sees the identity elements
alone (marked SUBSETTED) by every way of reading, and finds the Patient only by them: a
search, a chain or a sort by the address finds nothing, so it tells nothing either. The
controls: the owner and an organisation with the person's consent see and find it all."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from hub.config import Settings
from hub.db.engine import Database
from hub.fhir.identifiers import FNR_SYSTEM
from tests.access_clients import other_client
from tests.factories import consent, fnr, patient

IDENTITY = {"resourceType", "id", "meta", "identifier", "name", "gender", "birthDate"}
PHONE = {"system": "phone", "value": "+4791234567"}


def _identity_only(body: dict[str, Any]) -> None:
    assert set(body) <= IDENTITY, sorted(body)
    assert body["name"][0]["family"] == "Nordmann"
    assert any(t.get("code") == "SUBSETTED" for t in body["meta"]["tag"])


def _whole(body: dict[str, Any]) -> None:
    assert body["address"][0]["city"] == "Bryne"
    assert body["telecom"] == [PHONE]


def _matches(client: TestClient, query: str) -> list[dict[str, Any]]:
    r = client.get(f"/fhir/{query}")
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])
            if e.get("search", {}).get("mode") in ("match", "include")]


def test_a_holder_without_consent_sees_the_identity_only(settings: Settings,
                                                          database: Database) -> None:
    number = fnr()
    kari = patient(number, telecom=[PHONE],
                   generalPractitioner=[{"reference": "Organization/klepp-kommune"}])
    with other_client(settings, database, "jaeren-dps") as centre, \
            other_client(settings, database, "klepp-kommune") as klepp, \
            other_client(settings, database, "time-kommune") as time:
        pid = centre.post("/fhir/Patient", json=kari).json()["id"]
        _whole(centre.get(f"/fhir/Patient/{pid}").json())
        # Klepp knows the number: the hub tells it the person's Patient, not the Patient
        linked = klepp.post("/fhir/Patient", json=patient(number))
        assert linked.status_code == 200
        assert linked.json()["resourceType"] == "OperationOutcome"
        assert klepp.get(f"/fhir/Patient/{pid}").status_code == 404
        flag = klepp.post("/fhir/Flag", json={
            "resourceType": "Flag", "status": "active", "code": {"text": "Home visits"},
            "subject": {"reference": f"Patient/{pid}"}})
        assert flag.status_code == 201, flag.text

        # Now it holds a record about her: who she is, by every way of reading.
        _identity_only(klepp.get(f"/fhir/Patient/{pid}").json())
        _identity_only(klepp.get(f"/fhir/Patient/{pid}/_history/1").json())
        [version] = [e["resource"] for e in
                     klepp.get(f"/fhir/Patient/{pid}/_history").json()["entry"]]
        _identity_only(version)
        again = klepp.post("/fhir/Patient", json=patient(number))
        assert again.status_code == 200
        _identity_only(again.json())
        [found] = _matches(klepp, f"Patient?identifier={FNR_SYSTEM}|{number}")
        _identity_only(found)
        [found] = _matches(klepp, "Patient?family=Nordmann&gender=female")
        _identity_only(found)
        included = [r for r in _matches(klepp, "Flag?_include=Flag:patient")
                    if r["resourceType"] == "Patient"]
        assert len(included) == 1
        _identity_only(included[0])
        batch = klepp.post("/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": f"Patient/{pid}"}}]})
        assert batch.status_code == 200, batch.text
        _identity_only(batch.json()["entry"][0]["resource"])

        # ... and a search by what it may not see finds nothing, nor tells anything.
        for query in ("Patient?address-city=Bryne", "Patient?address=Storgata",
                      "Patient?phone=%2B4791234567", "Patient?telecom=%2B4791234567",
                      "Flag?patient.address-city=Bryne", "Flag?patient:Patient.phone=%2B4791234567",
                      "Patient?address-city=Bryne&_total=accurate&_count=0"):
            r = klepp.get(f"/fhir/{query}")
            assert r.status_code == 200, (query, r.text)
            assert _matches(klepp, query) == [], query
            assert r.json().get("total", 0) == 0, query
        # nor does it follow a reference the holder does not see (Kari's GP office, an
        # Organization of the directory, would show up as an _include)
        assert _matches(klepp, "Patient?_include=Patient:general-practitioner") == []
        assert _matches(klepp, "Patient?_include=*") == []
        # ... nor from the other side: which Organization her Patient names as GP
        by_her = f"Organization?_has:Patient:general-practitioner:identifier={number}"
        assert _matches(klepp, by_her) == []
        assert _matches(klepp, "Organization?_has:Patient:general-practitioner:name=Kari") == []
        assert _matches(klepp, f"Flag?patient.identifier={number}") != []  # by identity: yes

        # The controls: the owner, and Time once Kari's consent permits it, see it all and
        # find it by her address.
        assert centre.post("/fhir/Consent", json=consent(pid, "time-kommune")).status_code == 201
        time.post("/fhir/Flag", json={
            "resourceType": "Flag", "status": "active", "code": {"text": "Follow-up"},
            "subject": {"reference": f"Patient/{pid}"}})
        _whole(time.get(f"/fhir/Patient/{pid}").json())
        [found] = _matches(time, "Patient?address-city=Bryne")
        _whole(found)
        [found] = _matches(centre, "Patient?phone=%2B4791234567")
        _whole(found)
        assert len(_matches(centre, "Patient?_include=Patient:general-practitioner")) == 2
        assert [o["id"] for o in _matches(centre, by_her)] == ["klepp-kommune"]
        assert [o["id"] for o in _matches(time, by_her)] == ["klepp-kommune"]
        # Klepp still sees her identity only: Kari's consent names Time, not Klepp
        _identity_only(klepp.get(f"/fhir/Patient/{pid}").json())
