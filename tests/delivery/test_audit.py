"""What the audit trail holds of deliveries: each push that reached the receiver (taken or
refused), each dead letter and each replay, and never a password from an Endpoint's URL."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from hub.audit.models import AuditRecordRow
from hub.audit.recorder import Auditor
from hub.audit.signing import Signer
from hub.auth.subject import Subject
from hub.config import Settings
from hub.db.engine import Database
from hub.delivery import service
from hub.delivery.dispatcher import sweep
from tests.delivery.conftest import ReceiverFactory
from tests.delivery.factory import accept, add_org, add_patient, delivery
from tests.delivery.receivers import Reply

SENDER = "sender"


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


def test_an_endpoint_url_without_credentials_is_named_whole(
        database: Database, fast: Settings, receiver: ReceiverFactory) -> None:
    """The control: nothing is taken out of an ordinary URL."""
    r = receiver("time")
    add_org(database, SENDER)
    add_org(database, "time", r.url)
    accept(database, fast, sender=SENDER, receivers=["time"], patient_id=add_patient(database))
    assert sweep(database, fast, auditor=_auditor(fast)).delivered == 1
    assert f"Delivered by push to {r.url}." in json.dumps(_records(database))
