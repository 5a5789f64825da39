"""endpoint credentials

The userinfo of an Endpoint address (`https://user:password@host/...`, HTTP Basic for the
receiver) was stored in the Endpoint resource, which every client reads as the directory
(session 22's finding). It now has a table of its own, which no FHIR interaction reads.
Endpoints registered before keep their stored versions; README's "Onboarding" says to give
such an organisation a new password and set it with `hub org endpoint`.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 14:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.db.types import UTCDateTime

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'endpoint_credentials',
        sa.Column('endpoint_id', sa.String(length=64), nullable=False),
        sa.Column('userinfo', sa.Text(), nullable=False),
        sa.Column('updated_at', UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('endpoint_id'))


def downgrade() -> None:
    op.drop_table('endpoint_credentials')
