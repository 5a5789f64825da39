"""Every request leaves its audit records, in the transaction of the action it records: each
interaction of the REST API, failures (in a transaction of their own), token requests,
sign-ins, admin commands, and the consent gate's disclosure decisions."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from hub.app import create_app
from hub.audit.recorder import DISCLOSURES, Auditor, take_disclosures
from hub.audit.signing import Signer
from hub.auth.subject import Subject
from hub.cli import app as cli_app
from hub.config import Settings, get_settings
from hub.db.engine import Database
from hub.store import query as search_mod
from hub.store import service
from tests.access_clients import other_client
from tests.audit.trail import Record, check_chain, client_id_of, mark, since
from tests.auth_helpers import FORM, register_and_token, token_form
from tests.conftest import TEST_ORG
from tests.factories import consent, encounter, fnr, patient
from tests.ui.conftest import browser, make_user, sign_in  # noqa: F401 (browser: a fixture)

HUB = Subject.hub_itself()


@pytest.fixture
def agent(database: Database, client: TestClient) -> str:
    """The agent column of the `client` fixture's requests."""
    return f"Client/{client_id_of(database, TEST_ORG)}"


def one(database: Database, after: int) -> Record:
    """The one record appended after `after`."""
    records = since(database, after)
    assert len(records) == 1, [(r.subtype, r.patient_ref, r.outcome) for r in records]
    return records[0]


def _count(database: Database, rtype: str) -> int:
    with database.session(write=False) as s:
        request = search_mod.parse_request(rtype, [], default_count=500, max_count=500)
        return len(service.search(s, HUB, request=request)[0])


def _new_patient(client: TestClient, n: int = 2) -> str:
    """A new person: born on the `n`th of November 1969 (one Patient per fødselsnummer)."""
    r = client.post("/fhir/Patient", json=patient(fnr(date(1969, 11, n))))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


# --- the REST interactions ----------------------------------------------------------------


def test_create_read_vread_history_update_delete(client: TestClient, database: Database,
                                                 agent: str) -> None:
    m = mark(database)
    pid = _new_patient(client)
    created = one(database, m)
    assert (created.subtype, created.action, created.agent, created.patient_ref,
            created.outcome) == ("create", "C", agent, f"Patient/{pid}", "0")
    assert f"Patient/{pid}/_history/1" in created.entity_refs()

    m = mark(database)
    r = client.post("/fhir/Encounter", json=encounter(f"Patient/{pid}"))
    eid = r.json()["id"]
    rec = one(database, m)
    assert (rec.subtype, rec.patient_ref) == ("create", f"Patient/{pid}")
    assert rec.entity_refs() == [f"Encounter/{eid}/_history/1", f"Patient/{pid}"]

    steps: list[tuple[str, Any, str, str]] = [
        ("read", lambda: client.get(f"/fhir/Encounter/{eid}"), "R",
         f"Encounter/{eid}/_history/1"),
        ("vread", lambda: client.get(f"/fhir/Encounter/{eid}/_history/1"), "R",
         f"Encounter/{eid}/_history/1"),
        ("update", lambda: client.put(f"/fhir/Encounter/{eid}", json={
            **encounter(f"Patient/{pid}", status="finished"), "id": eid}), "U",
         f"Encounter/{eid}/_history/2"),
        ("history-instance", lambda: client.get(f"/fhir/Encounter/{eid}/_history"), "R",
         f"Encounter/{eid}"),
        ("delete", lambda: client.delete(f"/fhir/Encounter/{eid}"), "D",
         f"Encounter/{eid}/_history/3"),
    ]
    for subtype, call, action, ref in steps:
        m = mark(database)
        assert call().status_code < 300, subtype
        rec = one(database, m)
        assert (rec.subtype, rec.action, rec.agent, rec.patient_ref, rec.outcome) == (
            subtype, action, agent, f"Patient/{pid}", "0"), subtype
        assert ref in rec.entity_refs(), subtype
        assert rec.patients() == [f"Patient/{pid}"]


def test_a_search_leaves_one_record_per_patient_found(client: TestClient,
                                                      database: Database, agent: str) -> None:
    pids = [_new_patient(client, n) for n in (2, 3, 4)]
    for pid in pids:
        client.post("/fhir/Encounter", json=encounter(f"Patient/{pid}"))
    m = mark(database)
    assert len(client.get("/fhir/Encounter", params={"status": "in-progress"}).json()[
        "entry"]) == 3
    records = since(database, m)
    assert sorted(r.patient_ref or "" for r in records) == sorted(f"Patient/{p}" for p in pids)
    for rec in records:
        assert (rec.subtype, rec.action, rec.agent) == ("search-type", "E", agent)
        assert rec.patients() == [rec.patient_ref]  # BALP: one patient per event
        (query,) = [e for e in rec.event["entity"] if e["role"]["code"] == "24"]
        assert query["description"] == "status=in-progress"
    m = mark(database)
    assert client.get("/fhir/Encounter", params={"status": "cancelled"}).status_code == 200
    assert one(database, m).patient_ref is None


def test_transaction_batch_and_validate(client: TestClient, database: Database,
                                        agent: str) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6f1c7a8e-0000-4000-8000-000000000001",
         "resource": patient(), "request": {"method": "POST", "url": "Patient"}},
        {"resource": encounter("urn:uuid:6f1c7a8e-0000-4000-8000-000000000001"),
         "request": {"method": "POST", "url": "Encounter"}}]}
    m = mark(database)
    r = client.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    pid = r.json()["entry"][0]["response"]["location"].split("/")[1]
    rec = one(database, m)
    assert (rec.subtype, rec.action, rec.agent, rec.patient_ref) == (
        "transaction", "E", agent, f"Patient/{pid}")
    assert {ref.split("/")[0] for ref in rec.entity_refs()} == {"Patient", "Encounter"}

    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{pid}"}},
        {"request": {"method": "GET", "url": "Patient/nobody"}}]}
    m = mark(database)
    assert client.post("/fhir", json=batch).status_code == 200
    rec = one(database, m)
    assert (rec.subtype, rec.patient_ref) == ("batch", f"Patient/{pid}")

    m = mark(database)
    r = client.post("/fhir/Encounter/$validate", json=encounter(f"Patient/{pid}"))
    assert r.status_code == 200
    rec = one(database, m)
    assert (rec.subtype, rec.action, rec.patient_ref) == ("operation", "E", f"Patient/{pid}")
    assert {"system": "http://carehub.example/fhir/CodeSystem/operation", "code": "$validate",
            "display": "$validate"} in rec.event["subtype"]


# --- failures ------------------------------------------------------------------------------


def test_a_failed_request_leaves_a_failure_record_and_nothing_else(
        client: TestClient, database: Database, agent: str, settings: Settings) -> None:
    m = mark(database)
    assert client.get("/fhir/Encounter/never-was").status_code == 404
    rec = one(database, m)
    assert (rec.subtype, rec.action, rec.agent, rec.outcome, rec.patient_ref) == (
        "read", "R", agent, "4", None)
    assert rec.entity_refs() == ["Encounter/never-was"]
    assert "not known" in rec.event["outcomeDesc"]

    m = mark(database)
    assert client.get("/fhir/Patient/nobody/_history").status_code == 404
    rec = one(database, m)
    assert (rec.subtype, rec.patient_ref) == ("history-instance", "Patient/nobody")

    # Another organisation's record answers 404: a failed read, after the consent gate's
    # decision to withhold it.
    with TestClient(create_app(settings), raise_server_exceptions=False) as other:
        other.headers["Authorization"] = "Bearer " + register_and_token(
            other, database, org_id="other-org")
        theirs = other.post("/fhir/Encounter", json=encounter("Patient/x"),
                            headers={"Content-Type": "application/fhir+json"}).json()["id"]
    m = mark(database)
    assert client.get(f"/fhir/Encounter/{theirs}").status_code == 404
    withheld, rec = since(database, m)
    assert (withheld.subtype, withheld.patient_ref, withheld.outcome) == (
        "disclose", "Patient/x", "4")
    assert (rec.agent, rec.outcome, rec.entity_refs()) == (agent, "4", [f"Encounter/{theirs}"])

    m = mark(database)
    invalid = patient(fnr())
    invalid["identifier"][0]["value"] = "13116900217"  # wrong check digits
    r = client.post("/fhir/Patient", json=invalid)
    assert r.status_code == 422, r.text
    rec = one(database, m)
    assert (rec.subtype, rec.action, rec.outcome) == ("create", "C", "4")
    assert "POST /fhir/Patient: 422" in [e.get("description") for e in rec.event["entity"]]
    assert _count(database, "Patient") == 0


def test_without_a_token_the_caller_is_anonymous(client: TestClient,
                                                 database: Database) -> None:
    m = mark(database)
    assert client.get("/fhir/Patient", headers={"Authorization": ""}).status_code == 401
    rec = one(database, m)
    assert (rec.agent, rec.outcome, rec.subtype) == ("anonymous", "4", "search-type")
    m = mark(database)
    assert client.get("/fhir/metadata").status_code == 200
    assert client.get("/fhir/.well-known/smart-configuration").status_code == 200
    assert since(database, m) == []


def test_rollback_after_the_append_keeps_only_the_failure(
        client: TestClient, database: Database, agent: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The action's transaction fails after its success record was appended: neither
    persists, and the failure is recorded on its own."""
    auditor: Auditor = client.app.state.auditor
    real_write = auditor.write
    appended: list[list[int]] = []

    def write_then_fail(*args: Any, **kwargs: Any) -> list[int]:
        seqs = real_write(*args, **kwargs)
        if not appended:
            appended.append(seqs)
            raise RuntimeError("the transaction fails after the audit append")
        return seqs

    monkeypatch.setattr(auditor, "write", write_then_fail)
    m = mark(database)
    assert client.post("/fhir/Patient", json=patient()).status_code == 500
    assert appended == [[m + 1]]  # the success record was appended, then rolled back
    rec = one(database, m)
    # the failure is the only record after the mark (PostgreSQL's sequence does not hand the
    # rolled-back id out again; record ids are unique, not gapless)
    assert (rec.subtype, rec.agent, rec.outcome) == ("create", agent, "8")
    assert rec.seq >= m + 1
    assert _count(database, "Patient") == 0


def test_the_chain_verifies_after_a_burst_of_mixed_requests(
        client: TestClient, database: Database, settings: Settings) -> None:
    pid = _new_patient(client)
    for i in range(8):
        eid = client.post("/fhir/Encounter", json=encounter(f"Patient/{pid}")).json()["id"]
        client.get(f"/fhir/Encounter/{eid}")
        client.get("/fhir/Encounter", params={"patient": pid, "_count": "2"})
        client.get(f"/fhir/Encounter/missing-{i}")
        client.put(f"/fhir/Encounter/{eid}", json={**encounter(f"Patient/{pid}"), "id": eid},
                   headers={"If-Match": 'W/"9"'})  # 412
        client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "nope"})
    result = check_chain(settings, database)
    assert result.ok, result.reason
    assert result.count == mark(database) > 48


# --- tokens, sign-in, admin ----------------------------------------------------------------


def test_token_requests_are_recorded(client: TestClient, database: Database,
                                     agent: str) -> None:
    issued = [r for r in since(database, 0) if r.subtype == "token"]
    assert [(r.agent, r.outcome) for r in issued] == [(agent, "0")]
    assert issued[0].event["agent"][2]["who"] == {"reference": f"Organization/{TEST_ORG}"}
    m = mark(database)
    r = client.post("/auth/token", data=token_form("not.an.assertion"), headers=FORM)
    assert r.status_code in (400, 401)
    rec = one(database, m)
    assert (rec.subtype, rec.outcome, rec.agent) == ("token", "4", "anonymous")
    assert rec.event["outcomeDesc"].startswith("invalid_client")


def test_sign_in_is_recorded_whatever_the_outcome(database: Database,
                                                  browser: Any) -> None:  # noqa: F811
    make_user(database, "revisor")
    web = browser()
    m = mark(database)
    assert sign_in(web, "revisor", "feil passord her").status_code == 401
    assert sign_in(web, "nobody", "feil passord her").status_code == 401
    assert sign_in(web, "revisor").status_code == 303
    records = since(database, m)
    assert [(r.subtype, r.agent, r.outcome) for r in records] == [
        ("login", "User/revisor", "4"), ("login", "User/nobody", "4"),
        ("login", "User/revisor", "0")]
    assert [r.event["outcomeDesc"] for r in records] == [
        "wrong password", "no such user", "signed in"]
    assert records[2].event["agent"][0]["role"][0]["coding"][0]["code"] == "auditor"


@pytest.fixture
def cli(db_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> Iterator[CliRunner]:
    monkeypatch.setenv("HUB_DATABASE_URL", db_url)
    monkeypatch.setenv("HUB_AUDIT_KEY_FILE", settings.audit_key_file)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_admin_commands_are_recorded(cli: CliRunner, database: Database,
                                     settings: Settings) -> None:
    result = cli.invoke(cli_app, ["org", "add", "--id", "time-kommune", "--name",
                                  "Time kommune", "--kind", "municipality", "--identifier",
                                  "urn:oid:2.16.578.1.12.4.1.4.101|964969590"])
    assert result.exit_code == 0, result.output
    rec = one(database, 0)
    operator = getpass.getuser()
    assert (rec.subtype, rec.action, rec.agent, rec.outcome) == (
        "admin", "E", f"Operator/{operator}", "0")
    assert rec.entity_refs() == ["Organization/time-kommune"]
    assert rec.event["outcomeDesc"].startswith("org add --id time-kommune")
    m = mark(database)
    refused = cli.invoke(cli_app, ["org", "disable", "nowhere"])
    assert refused.exit_code == 1
    rec = one(database, m)
    assert (rec.subtype, rec.outcome) == ("admin", "4")
    assert check_chain(settings, database).ok


# --- disclosure decisions -------------------------------------------------------------------


def test_each_disclosure_decision_is_one_privacy_disclosure_event(
        database: Database, settings: Settings) -> None:
    """The consumer of the consent gate's decisions, fed by hand."""
    auditor = Auditor(Signer.from_file(settings.audit_key_file))
    time = Subject("client", "time-ehr", "time-kommune", frozenset({"system/*.*"}))
    with database.session(write=True) as s:
        s.info.setdefault(DISCLOSURES, []).extend([
            {"recipient": "Organization/time-kommune", "patient": "Patient/p1",
             "resources": ["Encounter/e1"], "decision": "permit", "basis": "Consent/c1",
             "reason": "Consent/c1 permits it"},
            {"recipient": "Organization/time-kommune", "patient": "Patient/p2",
             "resources": ["Encounter/e2"], "decision": "deny", "basis": None,
             "reason": "No active consent names Organization/time-kommune"},
            {"recipient": "Organization/time-kommune", "patient": "Patient/p3",
             "resources": ["Task/t3"], "decision": "permit-with-redaction",
             "basis": "admission-notice", "reason": "legal basis"},
        ])
        auditor.disclosures(s, take_disclosures(s), subject=time)
        assert DISCLOSURES not in s.info
    permit, deny, legal = since(database, 0)
    for rec in (permit, deny, legal):
        assert (rec.subtype, rec.action, rec.agent) == ("disclose", "R", "Client/time-ehr")
        assert rec.event["type"]["code"] == "110106"
    assert (permit.patient_ref, permit.outcome) == ("Patient/p1", "0")
    assert permit.entity_refs() == ["Patient/p1", "Encounter/e1", "Consent/c1"]
    assert (deny.patient_ref, deny.outcome) == ("Patient/p2", "4")
    basis = legal.event["entity"][-1]
    assert basis["what"]["identifier"]["value"] == "admission-notice"
    assert {d["type"]: d["valueString"] for d in basis["detail"]}["decision"] == (
        "permit-with-redaction")


def test_the_gate_decisions_of_a_request_are_recorded_with_it(
        settings: Settings, database: Database) -> None:
    """End to end: a municipality reads the centre's Encounter under a consent (permit, with
    the Consent as basis), and, once the consent is revoked, is refused (404) - the deny is
    recorded although the request's transaction rolled back."""
    with other_client(settings, database, "jaeren-dps") as dps, \
            other_client(settings, database, "time-kommune") as time:
        pid = dps.post("/fhir/Patient", json=patient()).json()["id"]
        eid = dps.post("/fhir/Encounter", json=encounter(f"Patient/{pid}")).json()["id"]
        given = consent(pid, "time-kommune")
        cid = dps.post("/fhir/Consent", json=given).json()["id"]
        time_agent = f"Client/{client_id_of(database, 'time-kommune')}"

        m = mark(database)
        assert time.get(f"/fhir/Encounter/{eid}").status_code == 200
        disclosed, read = since(database, m)
        assert (disclosed.subtype, disclosed.agent, disclosed.patient_ref, disclosed.outcome) \
            == ("disclose", time_agent, f"Patient/{pid}", "0")
        assert f"Consent/{cid}" in disclosed.entity_refs()
        assert disclosed.event["agent"][1]["who"] == {"reference": "Organization/time-kommune"}
        assert (read.subtype, read.outcome, read.patient_ref) == ("read", "0", f"Patient/{pid}")

        assert dps.put(f"/fhir/Consent/{cid}",
                       json={**given, "id": cid, "status": "inactive"}).status_code == 200
        m = mark(database)
        assert time.get(f"/fhir/Encounter/{eid}").status_code == 404
        decided = [r for r in since(database, m) if r.subtype == "disclose"]
        failed = [r for r in since(database, m) if r.subtype == "read"]
        assert [(r.patient_ref, r.outcome) for r in decided] == [(f"Patient/{pid}", "4")]
        assert [(r.outcome, r.agent) for r in failed] == [("4", time_agent)]
    assert check_chain(settings, database).ok
