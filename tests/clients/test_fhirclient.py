"""fhirclient (SMART on FHIR's Python client, PyPI), unmodified, against a live hub: it finds
the token endpoint in the CapabilityStatement's security, trades our signed assertion for a
token, then searches with paging to the end, reads, creates, conditionally creates, updates,
counts, and posts a transaction and a message."""

from __future__ import annotations

from datetime import date
from typing import Any

from fhirclient import client as smart_client
from fhirclient.models.bundle import Bundle
from fhirclient.models.patient import Patient

from hub.fhir.identifiers import FNR_SYSTEM
from tests.clients.conftest import LiveHub, patient_json, transaction_of
from tests.factories import fnr
from tests.messaging.test_story import EXAMPLES, load


def _client(hub: LiveHub) -> smart_client.FHIRClient:
    smart = smart_client.FHIRClient(settings={
        "app_id": hub.client_id, "api_base": hub.fhir, "scope": "system/*.*",
        "jwt_token": hub.assertion()})
    smart.wants_patient = False  # a backend service, not a patient launch (no launch/patient)
    smart.prepare()  # reads /metadata: rest.security tells it where the token endpoint is
    assert smart.server.auth is not None
    assert smart.server.auth.auth_type == "oauth2"
    smart.authorize()
    assert smart.ready
    return smart


def test_fhirclient_discovers_auth_and_does_the_everyday_work(live_hub: LiveHub) -> None:
    smart = _client(live_hub)
    server = smart.server
    made = []
    for i in range(5):  # create
        created = Patient(patient_json(fnr(date(1950 + i, 6, 7)), family=f"Lund{i}")) \
            .create(server)
        made.append(created["id"])

    # search with paging to the end: perform() follows no links, so walk `next` as it does
    bundle = Patient.where(struct={"family": "Lund", "_count": "2"}).perform(server)
    seen: list[str] = []
    pages = 0
    while bundle is not None and pages < 10:
        pages += 1
        seen += [e.resource.id for e in bundle.entry or [] if e.search.mode == "match"]
        nxt = next((link.url for link in bundle.link or [] if link.relation == "next"), None)
        bundle = Bundle(server.request_json(nxt)) if nxt else None
    assert sorted(seen) == sorted(made)
    assert pages == 3

    # count
    counted = Bundle(server.request_json("Patient?family=Lund&_summary=count"))
    assert counted.total == 5
    assert not counted.entry

    # read and update
    kari = Patient.read(made[0], server)
    kari.name[0].given = ["Kari", "Ane"]
    kari.update(server)
    assert Patient.read(made[0], server).meta.versionId == "2"

    # conditional create, both ways a client may send it
    number = fnr(date(1991, 1, 2))
    criteria = f"identifier={FNR_SYSTEM}|{number}"
    first = server.post_json("Patient", patient_json(number),
                             nosign=False).json()
    again: Any = server.session.post(f"{live_hub.fhir}/Patient", json=patient_json(number),
                                     headers={"If-None-Exist": criteria,
                                              **_auth(smart)})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first["id"]


def _auth(smart: smart_client.FHIRClient) -> dict[str, str]:
    headers: dict[str, str] = smart.server.auth.signed_headers({})
    return headers


def test_fhirclient_transaction_and_process_message(live_hub: LiveHub) -> None:
    smart = _client(live_hub)
    number = fnr(date(1977, 3, 4))
    answer = smart.server.post_json("", transaction_of(patient_json(number))).json()
    assert answer["type"] == "transaction-response"
    assert answer["entry"][0]["response"]["status"].startswith("201")
    found = Patient.where(struct={"identifier": f"{FNR_SYSTEM}|{number}"}).perform_resources(
        smart.server)
    assert len(found) == 1

    message = load(next(p for p in EXAMPLES if "admission-notice" in p.name))
    response = smart.server.post_json("$process-message", message).json()
    assert response["entry"][0]["resource"]["response"]["code"] == "ok"
