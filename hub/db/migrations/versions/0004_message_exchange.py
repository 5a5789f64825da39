"""message exchange

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 20:44:04.140103
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.db.types

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('message_full_urls',
    sa.Column('full_url', sa.String(length=100), nullable=False),
    sa.Column('target', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('full_url', name=op.f('pk_message_full_urls'))
    )
    op.create_table('messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('sender_org', sa.String(length=64), nullable=False),
    sa.Column('header_id', sa.String(length=64), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('patient_ref', sa.String(length=100), nullable=True),
    sa.Column('content_types', sa.String(length=1000), nullable=True),
    sa.Column('bundle_id', sa.String(length=64), nullable=False),
    sa.Column('received_at', hub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('response', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages')),
    sa.UniqueConstraint('sender_org', 'header_id', name='uq_messages_sender_header')
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index('ix_messages_patient', ['patient_ref'], unique=False)

    op.create_table('deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('message_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('receiver_org', sa.String(length=64), nullable=False),
    sa.Column('patient_ref', sa.String(length=100), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('decision', sa.String(length=30), nullable=False),
    sa.Column('basis', sa.String(length=200), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', hub.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', hub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', hub.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('published_at', hub.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('acknowledged_at', hub.db.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('ack_code', sa.String(length=20), nullable=True),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_deliveries_message_id_messages'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries')),
    sa.UniqueConstraint('message_id', 'receiver_org', name='uq_deliveries_message_receiver')
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_deliveries_pull', ['receiver_org', 'published_at'], unique=False)
        batch_op.create_index('ix_deliveries_queue', ['receiver_org', 'patient_ref', 'id'], unique=False)



def downgrade() -> None:
    op.drop_table('message_full_urls')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_queue')
        batch_op.drop_index('ix_deliveries_pull')
        batch_op.drop_index('ix_deliveries_due')

    op.drop_table('deliveries')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_patient')

    op.drop_table('messages')
