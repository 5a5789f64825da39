"""audit event ids unique

A record's writer's signature covers its body, and so its AuditEvent id, but not its seq:
a byte copy of a genuine record, inserted with another seq, passed every check of its own
and was sealed (session 22's finding D5). The hub writes each AuditEvent once (a new uuid4
each), so the event_id column becomes unique and the database refuses such a copy.

A trail that holds copies already (inserted before this migration) cannot take the index as
it is: of each AuditEvent's records the original keeps its event_id (a sealed one before an
unsealed one, then by leaf index, then by seq: hub/audit/copies.py) and the copies' column is
emptied, which the column allows (a record of a process older than 0014 has none). Nothing
signed changes, and `hub audit verify` still names each copy, by its body's id.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 11:30:00
"""
from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    conn = op.get_bind()
    repeated = conn.execute(sa.text(
        "SELECT event_id FROM audit_records WHERE event_id IS NOT NULL "
        "GROUP BY event_id HAVING count(*) > 1")).scalars().all()
    for event_id in repeated:
        rows = conn.execute(sa.text("SELECT seq, leaf_index FROM audit_records "
                                    "WHERE event_id = :e"), {"e": event_id}).all()
        original = min(rows, key=lambda r: (r.leaf_index is None, r.leaf_index or 0, r.seq))
        copies = [r.seq for r in rows if r.seq != original.seq]
        conn.execute(sa.text("UPDATE audit_records SET event_id = NULL "
                             "WHERE event_id = :e AND seq <> :s"),
                     {"e": event_id, "s": original.seq})
        log.warning("audit records %s repeat record %s's AuditEvent %s: copies inserted into "
                    "the trail; `hub audit verify` names them", copies, original.seq, event_id)
    with op.batch_alter_table('audit_records') as batch:
        batch.drop_index('ix_audit_records_event')
        batch.create_index('ix_audit_records_event', ['event_id'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('audit_records') as batch:
        batch.drop_index('ix_audit_records_event')
        batch.create_index('ix_audit_records_event', ['event_id'])
