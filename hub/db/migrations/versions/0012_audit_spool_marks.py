"""audit spool marks

Reads on SQLite commit their audit records to a spool file of their own (hub/audit/spool.py),
so that they do not wait for the database's write lock; the sealer moves them into
audit_records. This table says, per spool, up to which spool record id they were moved,
written in the same transaction as the move (exactly once, also after a crash mid-move).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 09:10:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'audit_spool_marks',
        sa.Column('spool_id', sa.String(length=36), nullable=False),
        sa.Column('moved_through', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  nullable=False),
        sa.PrimaryKeyConstraint('spool_id', name=op.f('pk_audit_spool_marks')),
    )


def downgrade() -> None:
    op.drop_table('audit_spool_marks')
