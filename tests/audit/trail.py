"""Reading the audit trail in tests: the records appended since a mark, and verify."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from hub.audit.models import AuditRecordRow
from hub.audit.seal import seal_all
from hub.audit.signing import Signer
from hub.audit.spool import ReadAudit
from hub.audit.verify import VerifyResult, verify
from hub.config import Settings
from hub.db.auth_models import ClientRow
from hub.db.engine import Database


@dataclass(frozen=True)
class Record:
    """One audit record: its columns and its AuditEvent."""

    seq: int
    patient_ref: str | None
    agent: str
    action: str
    subtype: str
    event: dict[str, Any]

    @property
    def outcome(self) -> str:
        return str(self.event["outcome"])

    def entity_refs(self) -> list[str]:
        """The `what.reference` of every entity."""
        return [e["what"]["reference"] for e in self.event.get("entity", [])
                if "reference" in e.get("what", {})]

    def patients(self) -> list[str]:
        """The BALP patient entities."""
        return [e["what"]["reference"] for e in self.event.get("entity", [])
                if e.get("role", {}).get("code") == "1"]


def settle(database: Database) -> int:
    """Move the records of reads waiting in the spool into the trail, as the sealer (and
    every auditor's query) does first; how many."""
    reads = ReadAudit(database)
    try:
        return reads.move_all()
    finally:
        reads.close()


def mark(database: Database) -> int:
    """The seq of the newest record (0 when the trail is empty), reads' records included."""
    settle(database)
    with database.session(write=False) as s:
        return int(s.scalar(select(func.coalesce(func.max(AuditRecordRow.seq), 0))) or 0)


def since(database: Database, seq: int) -> list[Record]:
    """The records after `seq` (reads' records moved in first), oldest first."""
    settle(database)
    with database.session(write=False) as s:
        rows = s.scalars(select(AuditRecordRow).where(AuditRecordRow.seq > seq)
                         .order_by(AuditRecordRow.seq)).all()
        return [Record(r.seq, r.patient_ref, r.agent, r.action, r.subtype,
                       json.loads(bytes(r.body))) for r in rows]


def check_chain(settings: Settings, database: Database) -> VerifyResult:
    """Seal what is waiting, then verify() the whole trail with the app's key
    (settings.audit_key_file)."""
    signer = Signer.from_file(settings.audit_key_file)
    settle(database)
    seal_all(database, signer)
    return verify(lambda: database.session(write=False), {signer.key_id: signer.public_key})


def client_id_of(database: Database, organization_id: str) -> str:
    """The client_id of the (one) client registered for an organisation."""
    with database.session(write=False) as s:
        return str(s.scalars(select(ClientRow.id)
                             .where(ClientRow.organization_id == organization_id)).one())
