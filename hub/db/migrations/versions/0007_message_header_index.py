"""message header index

Acknowledgements (`record_ack`) and replays by MessageHeader.id find a message by its header
id without its sender; the unique key leads with the sender, so they read every delivery of
the receiver instead. An index on header_id makes them look it up.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 01:00:00
"""
from __future__ import annotations

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_messages_header', 'messages', ['header_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_messages_header', table_name='messages')
