"""resource store

Revision ID: 0001
Revises:
Create Date: 2026-11-23 19:56:15.444550
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.db.types

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('resources',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_type', sa.String(length=64), nullable=False),
    sa.Column('logical_id', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('last_updated_at', hub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_resources')),
    sa.UniqueConstraint('resource_type', 'logical_id', name='uq_resources_type_id')
    )
    with op.batch_alter_table('resources', schema=None) as batch_op:
        batch_op.create_index('ix_resources_type_updated', ['resource_type', 'last_updated_at'], unique=False)

    op.create_table('conditional_keys',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_type', sa.String(length=64), nullable=False),
    sa.Column('criteria_hash', sa.String(length=64), nullable=False),
    sa.Column('criteria', sa.String(length=2000), nullable=False),
    sa.Column('resource_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['resource_pk'], ['resources.pk'], name=op.f('fk_conditional_keys_resource_pk_resources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conditional_keys')),
    sa.UniqueConstraint('resource_type', 'criteria_hash', name='uq_conditional_keys_criteria')
    )
    op.create_table('resource_versions',
    sa.Column('resource_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('last_updated_at', hub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=True),
    sa.ForeignKeyConstraint(['resource_pk'], ['resources.pk'], name=op.f('fk_resource_versions_resource_pk_resources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('resource_pk', 'version_id', name=op.f('pk_resource_versions'))
    )
    op.create_table('search_dates',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('resource_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('low_at', hub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('high_at', hub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['resource_pk'], ['resources.pk'], name=op.f('fk_search_dates_resource_pk_resources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_search_dates'))
    )
    with op.batch_alter_table('search_dates', schema=None) as batch_op:
        batch_op.create_index('ix_search_dates_high', ['resource_type', 'param', 'high_at'], unique=False)
        batch_op.create_index('ix_search_dates_lookup', ['resource_type', 'param', 'low_at'], unique=False)
        batch_op.create_index('ix_search_dates_resource', ['resource_pk'], unique=False)

    op.create_table('search_references',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('resource_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('target_type', sa.String(length=64), nullable=False),
    sa.Column('target_id', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['resource_pk'], ['resources.pk'], name=op.f('fk_search_references_resource_pk_resources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_search_references'))
    )
    with op.batch_alter_table('search_references', schema=None) as batch_op:
        batch_op.create_index('ix_search_references_lookup', ['resource_type', 'param', 'target_id', 'target_type'], unique=False)
        batch_op.create_index('ix_search_references_resource', ['resource_pk'], unique=False)

    op.create_table('search_strings',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('resource_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('value', sa.String(length=255), nullable=False),
    sa.Column('exact', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['resource_pk'], ['resources.pk'], name=op.f('fk_search_strings_resource_pk_resources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_search_strings'))
    )
    with op.batch_alter_table('search_strings', schema=None) as batch_op:
        batch_op.create_index('ix_search_strings_lookup', ['resource_type', 'param', 'value'], unique=False)
        batch_op.create_index('ix_search_strings_resource', ['resource_pk'], unique=False)

    op.create_table('search_tokens',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resource_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('resource_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=64), nullable=False),
    sa.Column('system', sa.String(length=255), nullable=True),
    sa.Column('code', sa.String(length=255), nullable=False),
    sa.ForeignKeyConstraint(['resource_pk'], ['resources.pk'], name=op.f('fk_search_tokens_resource_pk_resources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_search_tokens'))
    )
    with op.batch_alter_table('search_tokens', schema=None) as batch_op:
        batch_op.create_index('ix_search_tokens_lookup', ['resource_type', 'param', 'code', 'system'], unique=False)
        batch_op.create_index('ix_search_tokens_resource', ['resource_pk'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('search_tokens', schema=None) as batch_op:
        batch_op.drop_index('ix_search_tokens_resource')
        batch_op.drop_index('ix_search_tokens_lookup')

    op.drop_table('search_tokens')
    with op.batch_alter_table('search_strings', schema=None) as batch_op:
        batch_op.drop_index('ix_search_strings_resource')
        batch_op.drop_index('ix_search_strings_lookup')

    op.drop_table('search_strings')
    with op.batch_alter_table('search_references', schema=None) as batch_op:
        batch_op.drop_index('ix_search_references_resource')
        batch_op.drop_index('ix_search_references_lookup')

    op.drop_table('search_references')
    with op.batch_alter_table('search_dates', schema=None) as batch_op:
        batch_op.drop_index('ix_search_dates_resource')
        batch_op.drop_index('ix_search_dates_lookup')
        batch_op.drop_index('ix_search_dates_high')

    op.drop_table('search_dates')
    op.drop_table('resource_versions')
    op.drop_table('conditional_keys')
    with op.batch_alter_table('resources', schema=None) as batch_op:
        batch_op.drop_index('ix_resources_type_updated')

    op.drop_table('resources')
