"""$validate with `mode` (R4 ResourceValidationMode): besides the resource's validity, whether
the caller could create it, replace the stored version with it, or delete the stored one.
Each answer is checked against the write itself: what $validate allows, the write does, and
what it refuses, the write refuses; nothing is stored by asking."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from hub.config import Settings
from hub.db.engine import Database
from tests.access_clients import other_client
from tests.factories import consent, encounter, fnr, patient, task


def _said(r: Any) -> tuple[str, str]:
    """(worst severity, every diagnostic) of a $validate answer."""
    assert r.status_code == 200, r.text
    issues = r.json()["issue"]
    worst = "error" if any(i["severity"] in ("error", "fatal") for i in issues) else "information"
    return worst, " | ".join(i.get("diagnostics", "") for i in issues)


def _count(client: TestClient, query: str) -> int:
    return int(client.get(f"/fhir/{query}&_summary=count").json()["total"])


def test_mode_create_answers_what_the_create_does(settings: Settings,
                                                   database: Database) -> None:
    with other_client(settings, database, "jaeren-dps") as centre, \
            other_client(settings, database, "time-kommune") as time:
        pid = centre.post("/fhir/Patient", json=patient(fnr())).json()["id"]
        own = consent(pid, "klepp-kommune", custodian="time-kommune")
        others = consent(pid, "klepp-kommune", custodian="jaeren-dps")  # not Time's to record
        worst, text = _said(time.post("/fhir/Consent/$validate?mode=create", json=own))
        assert (worst, text) == ("information", "The Consent is valid; you may create it.")
        worst, text = _said(time.post("/fhir/Consent/$validate", json={
            "resourceType": "Parameters", "parameter": [
                {"name": "resource", "resource": others},
                {"name": "mode", "valueCode": "create"}]}))
        assert worst == "error"
        assert "custodian" in text
        # without mode: only the resource is judged, and it is a valid Consent
        assert _said(time.post("/fhir/Consent/$validate", json=others))[0] == "information"
        # the directory is never written by clients
        assert _said(time.post("/fhir/Organization/$validate?mode=create", json={
            "resourceType": "Organization", "name": "Mine"}))[0] == "error"
        assert _count(time, "Consent?_count=0") == 0  # asking stored nothing
        # the writes themselves agree
        assert time.post("/fhir/Consent", json=others).status_code == 422
        assert time.post("/fhir/Consent", json=own).status_code == 201
        assert time.post("/fhir/Organization", json={"resourceType": "Organization",
                                                     "name": "Mine"}).status_code == 403


def test_mode_update_and_delete_answer_what_the_write_does(settings: Settings,
                                                            database: Database) -> None:
    with other_client(settings, database, "jaeren-dps") as centre, \
            other_client(settings, database, "time-kommune") as time:
        body = patient(fnr())
        pid = centre.post("/fhir/Patient", json=body).json()["id"]
        changed = {**body, "id": pid, "gender": "female"}
        worst, text = _said(centre.post(f"/fhir/Patient/{pid}/$validate", json=changed))
        assert (worst, text) == ("information", f"The Patient is valid; it may replace "
                                                f"Patient/{pid}.")
        assert _said(centre.post(f"/fhir/Patient/{pid}/$validate?mode=update",
                                 json={**changed, "id": "other"}))[0] == "error"
        worst, text = _said(centre.post(f"/fhir/Patient/{pid}/$validate?mode=delete"))
        assert (worst, text) == ("information", f"You may delete Patient/{pid}.")
        read = centre.get(f"/fhir/Patient/{pid}")
        assert read.status_code == 200  # neither asking changed nor deleted it
        assert read.json()["meta"]["versionId"] == "1"
        # what the caller may not read is a 404, as the read is, whatever the mode
        for mode in ("update", "delete"):
            hidden = time.post(f"/fhir/Patient/{pid}/$validate?mode={mode}", json=changed)
            assert hidden.status_code == 404, hidden.text
            assert time.post(f"/fhir/Patient/no-such/$validate?mode={mode}",
                             json={**changed, "id": "no-such"}).status_code == 404

        # A Task the centre owns and names Time as owner: Time reads it as a party and sets
        # its status, nothing else, and never deletes it.
        enc = centre.post("/fhir/Encounter", json=encounter(f"Patient/{pid}")).json()["id"]
        sent = {**task(f"Patient/{pid}", f"Encounter/{enc}"),
                "requester": {"reference": "Organization/jaeren-dps"},
                "owner": {"reference": "Organization/time-kommune"}}
        made = centre.post("/fhir/Task", json=sent)
        assert made.status_code == 201, made.text
        tid = made.json()["id"]
        rewritten = {**made.json(), "description": "Time's own words"}
        accepted = {**made.json(), "status": "accepted"}
        worst, said_of_put = _said(time.post(f"/fhir/Task/{tid}/$validate", json=rewritten))
        assert worst == "error"
        assert _said(time.post(f"/fhir/Task/{tid}/$validate", json=accepted))[0] == "information"
        worst, said_of_delete = _said(time.post(f"/fhir/Task/{tid}/$validate?mode=delete"))
        assert worst == "error"
        assert time.get(f"/fhir/Task/{tid}").json()["meta"]["versionId"] == "1"
        refused = time.put(f"/fhir/Task/{tid}", json=rewritten)
        assert refused.status_code in (403, 422)
        assert refused.json()["issue"][0]["diagnostics"] in said_of_put  # the write's words
        refused = time.delete(f"/fhir/Task/{tid}")
        assert refused.status_code == 403
        assert refused.json()["issue"][0]["diagnostics"] in said_of_delete
        assert time.put(f"/fhir/Task/{tid}", json=accepted).status_code == 200


def test_mode_create_of_a_person_the_hub_keeps_says_it_would_write_nothing(
        settings: Settings, database: Database) -> None:
    """Probe E (session 23): a Patient with a fødselsnummer the hub keeps is not created but
    linked (CONTRACT section 3); $validate mode=create said "you may create it". It now
    says what the create says: nothing would be written, naming the Patient as the create
    names it, and no more."""
    number = fnr()
    with other_client(settings, database, "jaeren-dps") as centre, \
            other_client(settings, database, "klepp-kommune") as klepp:
        pid = centre.post("/fhir/Patient", json=patient(number)).json()["id"]
        worst, text = _said(klepp.post("/fhir/Patient/$validate?mode=create",
                                       json=patient(number)))
        assert worst == "information"
        assert "you may create it" not in text
        assert "would write nothing" in text
        created = klepp.post("/fhir/Patient", json=patient(number))
        assert created.status_code == 200  # the create itself: linked, nothing written
        assert created.json()["issue"][0]["diagnostics"] in text
        worst, text = _said(centre.post("/fhir/Patient/$validate?mode=create",
                                        json=patient(number)))
        assert text == (f"The Patient is valid; a create would write nothing: the hub keeps "
                        f"this person as Patient/{pid}.")
        # control: a new person may be created
        assert _said(klepp.post("/fhir/Patient/$validate?mode=create",
                                json=patient(fnr(start=7))))[1] == (
            "The Patient is valid; you may create it.")


def test_modes_in_the_wrong_place_are_400(client: TestClient) -> None:
    pid = client.post("/fhir/Patient", json=patient(fnr())).json()["id"]
    assert client.post("/fhir/Patient/$validate?mode=update", json=patient()).status_code == 400
    assert client.post("/fhir/Patient/$validate?mode=delete", json=patient()).status_code == 400
    assert client.post(f"/fhir/Patient/{pid}/$validate?mode=create",
                       json=patient()).status_code == 400
    assert client.post(f"/fhir/Patient/{pid}/$validate?mode=update").status_code == 400
    assert client.post("/fhir/Patient/$validate?mode=sometimes",
                       json=patient()).status_code == 400
    r = client.get(f"/fhir/Patient/{pid}/$validate")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    for method in ("GET", "HEAD", "DELETE", "PUT"):  # _search too (probe E, F4)
        r = client.request(method, "/fhir/Patient/_search")
        assert r.status_code == 405, (method, r.text)
        assert r.headers["allow"] == "POST"
