"""What the audit trail holds of deliveries: each push that reached the receiver (taken or
refused), each dead letter and each replay, and never a password from an Endpoint's URL."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from hub.app import create_app
from hub.audit.models import AuditRecordRow
from hub.audit.recorder import Auditor
from hub.audit.signing import Signer
from hub.auth.subject import Subject
from hub.config import Settings
from hub.db.auth_models import EndpointCredentialRow
from hub.db.engine import Database
from hub.delivery import service
from hub.delivery.dispatcher import sweep
from hub.orgs.service import set_endpoint
from tests.auth_helpers import register_and_token
from tests.delivery.conftest import ReceiverFactory
from tests.delivery.factory import accept, add_org, add_patient, delivery
from tests.delivery.receivers import Reply

SENDER = "sender"
HUB = Subject.hub_itself()


def _auditor(settings: Settings) -> Auditor:
    return Auditor(Signer.from_file(settings.audit_key_file), base_url=settings.fhir_base)


def _records(db: Database, after: int = 0) -> list[dict[str, Any]]:
    """The bodies of the records after seq `after`, oldest first."""
    with db.session(write=False) as s:
        return [json.loads(bytes(b)) for b in s.scalars(
            select(AuditRecordRow.body).where(AuditRecordRow.seq > after)
            .order_by(AuditRecordRow.seq))]


def _with_userinfo(url: str, userinfo: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{userinfo}@{rest}"


def test_a_password_in_the_endpoint_url_is_kept_out_of_the_trail_and_the_last_error(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    """The receiver wants HTTP Basic, given in its Endpoint's URL: the push sends it, but
    neither the delivery's last error (a refusal) nor the trail's record of the push that
    got through holds it; they name the URL with `***` for the userinfo."""
    r = receiver("cred")
    r.script.append(Reply(422))
    add_org(database, SENDER)
    add_org(database, "cred", _with_userinfo(r.url, "hubuser:S3cretPass"))
    auditor = _auditor(fast)
    m = accept(database, fast, sender=SENDER, receivers=["cred"],
               patient_id=add_patient(database))
    assert sweep(database, fast, auditor=auditor).dead_lettered == 1
    dead = delivery(database, m.deliveries["cred"])
    assert dead.last_error is not None
    assert "S3cretPass" not in dead.last_error
    assert _with_userinfo(r.url, "***") in dead.last_error
    with database.session(write=True) as s:
        service.replay(s, Subject.hub_itself(), message_header_id=m.header_id)
    assert sweep(database, fast, auditor=auditor).delivered == 1
    trail = json.dumps(_records(database))
    assert "S3cretPass" not in trail
    assert "hubuser" not in trail
    assert f"Delivered by push to {_with_userinfo(r.url, '***')}." in trail


def test_endpoint_credentials_are_kept_apart_from_the_directory(
        database: Database, fast: Settings, receiver: ReceiverFactory,
        settings: Settings) -> None:
    """`hub org add --endpoint https://user:password@host/...`: every client reads the
    Endpoint as the directory, and it holds the address without the userinfo; the push still
    sends HTTP Basic. `hub org endpoint` with an address without userinfo drops them."""
    r = receiver("cred")
    add_org(database, SENDER)
    add_org(database, "cred", _with_userinfo(r.url, "hubuser:S3cretPass"))
    with TestClient(create_app(settings)) as c:
        c.headers["Authorization"] = "Bearer " + register_and_token(c, database,
                                                                    org_id="time-kommune")
        shown = c.get("/fhir/Endpoint/cred-msg")
        assert shown.status_code == 200
        assert shown.json()["address"] == r.url
        assert "S3cretPass" not in c.get("/fhir/Endpoint/cred-msg/_history").text
    accept(database, fast, sender=SENDER, receivers=["cred"], patient_id=add_patient(database))
    assert sweep(database, fast, auditor=_auditor(fast)).delivered == 1
    basic = "Basic " + base64.b64encode(b"hubuser:S3cretPass").decode()
    assert [g.authorization for g in r.requests] == [basic]
    with database.session(write=True) as s:  # a new address, without credentials
        set_endpoint(s, HUB, "cred", r.url)
    accept(database, fast, sender=SENDER, receivers=["cred"], patient_id=add_patient(database))
    assert sweep(database, fast, auditor=_auditor(fast)).delivered == 1
    assert [g.authorization for g in r.requests] == [basic, None]
    with database.session(write=False) as s:
        assert s.scalars(select(EndpointCredentialRow)).all() == []


def test_an_endpoint_url_without_credentials_is_named_whole(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    """The control: nothing is taken out of an ordinary URL."""
    r = receiver("time")
    add_org(database, SENDER)
    add_org(database, "time", r.url)
    accept(database, fast, sender=SENDER, receivers=["time"], patient_id=add_patient(database))
    assert sweep(database, fast, auditor=_auditor(fast)).delivered == 1
    assert f"Delivered by push to {r.url}." in json.dumps(_records(database))


def _of(records: list[dict[str, Any]], subtype: str) -> list[dict[str, Any]]:
    codes = {subtype}
    return [r for r in records if {c["code"] for c in r["subtype"]} & codes]


def _detail(record: dict[str, Any], role: str) -> dict[str, str]:
    [entity] = [e for e in record["entity"] if e["role"]["code"] == role]
    return {d["type"]: d["valueString"] for d in entity.get("detail", [])}


def test_a_refused_push_and_its_dead_letter_are_recorded_and_a_replay_keeps_them(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    """The receiver answers 422: it was sent the message (a disclosure, recorded as one,
    saying it was not taken), and the delivery is dead-lettered (a delivery record, outcome
    8). A replay records what the delivery was before (attempts, last error, since when);
    the row starts a new round (attempts 0, a fresh max-age window) and keeps its last error
    until the next attempt's outcome."""
    r = receiver("klepp")
    r.script.append(Reply(422))
    add_org(database, SENDER)
    add_org(database, "klepp", r.url)
    auditor = _auditor(fast)
    m = accept(database, fast, sender=SENDER, receivers=["klepp"],
               patient_id=add_patient(database))
    did = m.deliveries["klepp"]
    assert sweep(database, fast, auditor=auditor).dead_lettered == 1
    dead = delivery(database, did)
    records = _records(database)
    [refused] = [d for d in _of(records, "disclose")
                 if "not taken" in d.get("outcomeDesc", "")]
    assert f"Pushed to {r.url} (attempt 1), not taken: HTTP 422" in refused["outcomeDesc"]
    assert _detail(refused, "13")["decision"] == "permit"  # the data went
    [step] = _of(records, "delivery")
    assert step["outcome"] == "8"
    assert step["outcomeDesc"].startswith("Dead-lettered after 1 attempt(s): HTTP 422")
    state = _detail(step, "20")
    assert (state["status"], state["attempts"]) == ("dead-letter", "1")
    assert state["last-error"].startswith("HTTP 422")
    assert {a["who"].get("reference") for a in step["agent"]} >= {"Organization/klepp"}
    last = _last_seq(database)
    with database.session(write=True) as s:
        service.replay(s, Subject.hub_itself(), delivery_ids=[did], auditor=auditor)
    again = delivery(database, did)
    assert (again.status, again.attempts) == ("queued", 0)
    assert again.created_at > dead.created_at
    assert again.last_error == dead.last_error
    [replayed] = _of(_records(database, last), "delivery")
    assert replayed["outcome"] == "0"
    state = _detail(replayed, "20")
    assert (state["status"], state["attempts"]) == ("dead-letter", "1")
    assert state["last-error"] == dead.last_error
    assert "HTTP 422" in replayed["outcomeDesc"]
    assert sweep(database, fast, auditor=auditor).delivered == 1
    assert delivery(database, did).last_error is None
    # the refusal and the dead letter are still in the trail after the success
    assert len(_of(_records(database), "delivery")) == 2


def test_an_attempt_that_reached_no_receiver_is_no_disclosure(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    """The control: connection refused sends nothing, so no disclosure is recorded for it;
    giving up at the end of the max age is still a dead letter on the record."""
    r = receiver("down", up=False)
    add_org(database, SENDER)
    add_org(database, "down", r.url)
    auditor = _auditor(fast)
    m = accept(database, fast, sender=SENDER, receivers=["down"],
               patient_id=add_patient(database))
    assert sweep(database, fast, auditor=auditor).retried == 1
    assert _of(_records(database), "disclose") == []
    created = delivery(database, m.deliveries["down"]).created_at
    later = created + timedelta(seconds=fast.delivery_max_age + 1)
    assert sweep(database, fast, auditor=auditor, now=later).dead_lettered == 1
    records = _records(database)
    assert _of(records, "disclose") == []
    [step] = _of(records, "delivery")
    assert "giving up" in step["outcomeDesc"]
    assert "ConnectError" in step["outcomeDesc"]


def _last_seq(database: Database) -> int:
    with database.session(write=False) as s:
        return int(s.scalar(select(func.max(AuditRecordRow.seq))) or 0)
