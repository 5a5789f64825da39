"""delivery leases

A delivery's lease (a dispatcher's attempt under way) gets a column of its own, so that the
cap on attempts under way to one receiver (HUB_DELIVERY_PER_RECEIVER) holds across every
dispatcher process on the database, not per process: next_attempt_at cannot tell a lease
from a retry waiting for its time.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 01:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.db.types

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deliveries') as batch:
        batch.add_column(sa.Column('leased_until', hub.db.types.UTCDateTime(timezone=True), nullable=True))
        batch.create_index('ix_deliveries_leased', ['leased_until', 'receiver_org'])


def downgrade() -> None:
    with op.batch_alter_table('deliveries') as batch:
        batch.drop_index('ix_deliveries_leased')
        batch.drop_column('leased_until')
