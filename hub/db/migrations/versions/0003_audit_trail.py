"""audit trail

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 20:15:01.830406
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.db.types

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    head = op.create_table('audit_chain_head',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_audit_chain_head_single_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_chain_head'))
    )
    op.create_table('audit_records',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('recorded_at', hub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('patient_ref', sa.String(length=128), nullable=True),
    sa.Column('agent', sa.String(length=255), nullable=False),
    sa.Column('action', sa.String(length=1), nullable=False),
    sa.Column('subtype', sa.String(length=64), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('signature', sa.String(length=128), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_audit_records'))
    )
    with op.batch_alter_table('audit_records', schema=None) as batch_op:
        batch_op.create_index('ix_audit_records_patient', ['patient_ref', 'recorded_at'], unique=False)
        batch_op.create_index('ix_audit_records_recorded', ['recorded_at'], unique=False)

    # The empty chain: appends lock this row, so it must exist before the first one.
    op.bulk_insert(head, [{'id': 1, 'seq': 0, 'hash': '0' * 64}])


def downgrade() -> None:
    with op.batch_alter_table('audit_records', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_records_recorded')
        batch_op.drop_index('ix_audit_records_patient')

    op.drop_table('audit_records')
    op.drop_table('audit_chain_head')
