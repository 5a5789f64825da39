"""scheduled checks

The due rows of the timed checks (hub/scheduler/models.py): one row per deadline, a partial
index on the due time of open rows (what every sweep reads), and one per patient (what a
follow-up contact looks up).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 12:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.db.types

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

OPEN = sa.text("closed_at IS NULL")


def upgrade() -> None:
    op.create_table('scheduled_checks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('target', sa.String(length=200), nullable=False),
    sa.Column('patient_ref', sa.String(length=100), nullable=True),
    sa.Column('recipients', sa.String(length=1000), nullable=False),
    sa.Column('anchor_at', hub.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('due_at', hub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_at', hub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('closed_at', hub.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=30), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scheduled_checks')),
    sa.UniqueConstraint('kind', 'target', name='uq_scheduled_checks_kind_target')
    )
    with op.batch_alter_table('scheduled_checks', schema=None) as batch_op:
        batch_op.create_index('ix_scheduled_checks_due', ['due_at', 'id'], unique=False,
                              sqlite_where=OPEN, postgresql_where=OPEN)
        batch_op.create_index('ix_scheduled_checks_patient', ['patient_ref', 'kind'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('scheduled_checks', schema=None) as batch_op:
        batch_op.drop_index('ix_scheduled_checks_patient')
        batch_op.drop_index('ix_scheduled_checks_due')
    op.drop_table('scheduled_checks')
