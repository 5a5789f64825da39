"""workflows

The tables of the care-coordination rules (hub/workflows/models.py): units with
user-controlled beds, self-admission agreements and every self-admission request.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 12:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.db.types

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('self_admission_units',
    sa.Column('unit_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('managing_org', sa.String(length=64), nullable=True),
    sa.Column('beds', sa.Integer(), nullable=False),
    sa.Column('updated_at', hub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('unit_id', name=op.f('pk_self_admission_units'))
    )
    op.create_table('self_admission_agreements',
    sa.Column('agreement_id', sa.String(length=64), nullable=False),
    sa.Column('patient_ref', sa.String(length=100), nullable=False),
    sa.Column('unit_id', sa.String(length=64), nullable=False),
    sa.Column('centre_org', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('max_days_per_stay', sa.Integer(), nullable=False),
    sa.Column('min_days_between_stays', sa.Integer(), nullable=False),
    sa.Column('valid_from_at', hub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('valid_until_at', hub.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('parties', sa.String(length=1000), nullable=False),
    sa.Column('updated_at', hub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['unit_id'], ['self_admission_units.unit_id'], name=op.f('fk_self_admission_agreements_unit_id_self_admission_units')),
    sa.PrimaryKeyConstraint('agreement_id', name=op.f('pk_self_admission_agreements'))
    )
    with op.batch_alter_table('self_admission_agreements', schema=None) as batch_op:
        batch_op.create_index('ix_self_admission_agreements_unit', ['unit_id'], unique=False)

    op.create_table('self_admission_requests',
    sa.Column('task_id', sa.String(length=64), nullable=False),
    sa.Column('agreement_id', sa.String(length=64), nullable=False),
    sa.Column('unit_id', sa.String(length=64), nullable=False),
    sa.Column('patient_ref', sa.String(length=100), nullable=False),
    sa.Column('requester_org', sa.String(length=64), nullable=False),
    sa.Column('start_at', hub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('end_at', hub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('days', sa.Integer(), nullable=False),
    sa.Column('over_maximum', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('decided_by', sa.String(length=10), nullable=True),
    sa.Column('reason_code', sa.String(length=40), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('next_possible_on', sa.Date(), nullable=True),
    sa.Column('flag_id', sa.String(length=64), nullable=True),
    sa.Column('received_at', hub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('decided_at', hub.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['agreement_id'], ['self_admission_agreements.agreement_id'], name=op.f('fk_self_admission_requests_agreement_id_self_admission_agreements')),
    sa.PrimaryKeyConstraint('task_id', name=op.f('pk_self_admission_requests'))
    )
    with op.batch_alter_table('self_admission_requests', schema=None) as batch_op:
        batch_op.create_index('ix_self_admission_requests_agreement', ['agreement_id', 'status'], unique=False)
        batch_op.create_index('ix_self_admission_requests_unit', ['unit_id', 'status', 'start_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('self_admission_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_self_admission_requests_unit')
        batch_op.drop_index('ix_self_admission_requests_agreement')

    op.drop_table('self_admission_requests')
    with op.batch_alter_table('self_admission_agreements', schema=None) as batch_op:
        batch_op.drop_index('ix_self_admission_agreements_unit')

    op.drop_table('self_admission_agreements')
    op.drop_table('self_admission_units')
