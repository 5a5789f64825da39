"""audit verifications

Each run of `hub audit verify` is kept (when, whole or not, records intact, the first broken
record), so the auditors' pages can say when the trail was last verified and with what result.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 06:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.db.types

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'audit_verifications',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
                  nullable=False),
        sa.Column('verified_at', hub.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('ok', sa.Boolean(), nullable=False),
        sa.Column('intact', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('first_broken_seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  nullable=True),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_verifications')),
    )
    op.create_index('ix_audit_verifications_at', 'audit_verifications', ['verified_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_audit_verifications_at', table_name='audit_verifications')
    op.drop_table('audit_verifications')
