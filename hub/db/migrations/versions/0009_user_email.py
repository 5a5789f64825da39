"""user e-mail and notice state

People may have an e-mail address (`hub user add --email`) for the hub's notices without
health information (adapters/email); `notified_at` and `notified_digest` record the last
notice sent to them (at most one per HUB_NOTIFY_INTERVAL, and only when what is pending
changed).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 06:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.db.types import UTCDateTime

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('email', sa.String(length=320), nullable=True))
        batch.add_column(sa.Column('notified_at', UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('notified_digest', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.drop_column('notified_digest')
        batch.drop_column('notified_at')
        batch.drop_column('email')
