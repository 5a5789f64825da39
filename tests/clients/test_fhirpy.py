"""fhirpy (PyPI), unmodified, against a live hub: token, search with paging to the end, read,
create, conditional create (get_or_create), update, conditional update, chains and `_has`,
count, transaction, $process-message."""

from __future__ import annotations

from datetime import date

import httpx
import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome

from hub.fhir.identifiers import FNR_SYSTEM
from tests.clients.conftest import LiveHub, patient_json
from tests.factories import fnr
from tests.messaging.test_story import EXAMPLES, load


def _client(hub: LiveHub) -> SyncFHIRClient:
    return SyncFHIRClient(hub.fhir, authorization=f"Bearer {hub.token()}",
                          extra_headers={"Content-Type": "application/fhir+json"})


def test_fhirpy_does_the_everyday_work(live_hub: LiveHub) -> None:
    client = _client(live_hub)
    numbers = [fnr(date(1960 + i, 3, 4)) for i in range(7)]
    made = []
    for i, number in enumerate(numbers):  # create
        patient = client.resource("Patient", **patient_json(number, family=f"Berg{i}"))
        patient.save()
        assert patient.id
        made.append(patient.id)

    # search, paging to the end (the page size forces several pages), and count
    found = client.resources("Patient").search(family="Berg").limit(3).fetch_all()
    assert sorted(p.id for p in found) == sorted(made)
    assert client.resources("Patient").search(family="Berg").count() == 7
    assert client.resources("Patient").search(family="Nobody").count() == 0

    # read and update
    first = client.reference("Patient", made[0]).to_resource()
    assert first["name"][0]["family"] == "Berg0"
    first["name"][0]["given"] = ["Kari", "Marie"]
    first.save()
    again = client.resources("Patient").search(_id=made[0]).get()
    assert again["name"][0]["given"] == ["Kari", "Marie"]
    assert again["meta"]["versionId"] == "2"

    # conditional create: the criteria go in the POST URL; the second call finds the first
    number = fnr(date(1990, 5, 6))
    search = client.resources("Patient").search(identifier=f"{FNR_SYSTEM}|{number}")
    created, was_new = search.get_or_create(client.resource("Patient", **patient_json(number)))
    assert was_new
    again_p, was_new = search.get_or_create(client.resource("Patient", **patient_json(number)))
    assert not was_new
    assert again_p.id == created.id
    assert client.resources("Patient").search(identifier=f"{FNR_SYSTEM}|{number}").count() == 1

    # chained search by fødselsnummer, as coordinators' systems do
    encounter = client.resource("Encounter", status="finished",
                                **{"class": {"system": "http://terminology.hl7.org/CodeSystem/"
                                             "v3-ActCode", "code": "AMB"}},
                                subject={"reference": f"Patient/{created.id}"})
    encounter.save()
    chained = client.resources("Encounter").search(
        **{"subject:Patient.identifier": f"{FNR_SYSTEM}|{number}"}).fetch_all()
    assert [e.id for e in chained] == [encounter.id]

    # conditional update (PUT Patient?identifier=...): the one match is updated in place
    changed = client.resource("Patient", **patient_json(number, family="Ny"))
    updated, was_new = search.update(changed)
    assert not was_new
    assert updated.id == created.id
    assert updated["meta"]["versionId"] == "2"
    newcomer = fnr(date(1991, 7, 8))
    made_p, was_new = client.resources("Patient").search(
        identifier=f"{FNR_SYSTEM}|{newcomer}").update(
        client.resource("Patient", **patient_json(newcomer)))
    assert was_new
    assert made_p.id != created.id

    # reverse chaining (_has) and a chain of two links, as fhirpy writes them
    having = client.resources("Patient").has("Encounter", "subject", status="finished")
    assert [p.id for p in having.fetch_all()] == [created.id]
    two_links = client.resources("Encounter").search(
        subject__Patient__general_practitioner__name="Nobody").fetch_all()
    assert two_links == []


def test_fhirpy_transaction_and_process_message(live_hub: LiveHub) -> None:
    client = _client(live_hub)
    number = fnr(date(1975, 8, 9))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:5b0cf3b2-6a1e-4d55-9d52-1b0b9b0c7e11",
         "resource": patient_json(number), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Flag", "status": "active",
                      "code": {"text": "Contact the coordinator first"},
                      "subject": {"reference": "urn:uuid:5b0cf3b2-6a1e-4d55-9d52-1b0b9b0c7e11"}},
         "request": {"method": "POST", "url": "Flag"}}]}
    answer = client.execute("", method="post", data=bundle)
    assert answer["type"] == "transaction-response"
    assert [e["response"]["status"][:3] for e in answer["entry"]] == ["201", "201"]
    flags = client.resources("Flag").search(patient__identifier=f"{FNR_SYSTEM}|{number}")
    assert flags.count() == 1

    message = load(next(p for p in EXAMPLES if "admission-notice" in p.name))
    response = client.execute("$process-message", method="post", data=message)
    header = response["entry"][0]["resource"]
    assert header["response"]["code"] == "ok"
    assert header["response"]["identifier"] == message["entry"][0]["resource"]["id"]


def test_fhirpy_gets_the_hubs_refusals_as_errors(live_hub: LiveHub) -> None:
    r = httpx.get(f"{live_hub.fhir}/Patient")  # no token
    assert r.status_code == 401
    client = _client(live_hub)
    with pytest.raises(OperationOutcome, match="Patient.gender"):  # fhirpy's error for a 4xx
        client.resource("Patient", gender="x").save()
    assert client.resources("Patient").count() == 0
