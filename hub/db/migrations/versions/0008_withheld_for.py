"""deliveries.withheld_for

A delivery withheld for something a later consent supplies (an individual plan without the
patient's consent to it) says so, so that recording that consent releases exactly those
deliveries (CONTRACT section 5).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 06:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deliveries') as batch:
        batch.add_column(sa.Column('withheld_for', sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deliveries') as batch:
        batch.drop_column('withheld_for')
