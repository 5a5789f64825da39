"""audit merkle tree

The audit trail stops being a hash chain that every audited transaction extends under one
locked head row, and becomes records appended by plain inserts and sealed in the background
into an RFC 9162 Merkle tree with signed checkpoints (hub/audit/seal.py).

Existing records are kept as they are, with their chain columns (prev_hash, hash) and their
signatures over the chain hash; they are left unsealed here (a migration holds no signing
key), and the first seal checks their chain link by link and signature by signature, then
seals them in chain order before any new record (new ids come after theirs). From then on the
tree covers them; the chain columns stay as they were for whoever wants to re-check them.
The chain head row is dropped after checking that it names the last record: a trail whose tail
was cut off or extended behind the writer's back is refused here rather than converted.

Record ids now come from a sequence (PostgreSQL) or the row id (SQLite), starting after the
last chain record.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 05:45:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import hub.db.types

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

UNSEALED = sa.text("leaf_index IS NULL")
PK = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def _check_chain_head() -> None:
    conn = op.get_bind()
    head = conn.execute(sa.text("SELECT seq, hash FROM audit_chain_head WHERE id = 1")).first()
    last = conn.execute(sa.text(
        "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1")).first()
    head_at = (int(head[0]), str(head[1])) if head is not None else None
    last_at = (int(last[0]), str(last[1])) if last is not None else (0, '0' * 64)
    if head_at != last_at:
        raise RuntimeError(
            f"audit trail: the chain head {head_at} does not name the last record {last_at} "
            "(a truncated or extended tail); check it with `hub audit verify` of the release "
            "before 0008 and restore the trail before upgrading")


def upgrade() -> None:
    _check_chain_head()
    with op.batch_alter_table('audit_records', schema=None) as batch_op:
        batch_op.alter_column('prev_hash', existing_type=sa.String(length=64), nullable=True)
        batch_op.alter_column('hash', existing_type=sa.String(length=64), nullable=True)
        batch_op.add_column(sa.Column('leaf_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('leaf_index', PK, nullable=True))
    op.create_index('ix_audit_records_leaf', 'audit_records', ['leaf_index'], unique=True)
    op.create_index('ix_audit_records_unsealed', 'audit_records', ['seq'], unique=False,
                    sqlite_where=UNSEALED, postgresql_where=UNSEALED)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("CREATE SEQUENCE audit_records_seq_seq OWNED BY audit_records.seq")
        op.execute("SELECT setval('audit_records_seq_seq', "
                   "(SELECT coalesce(max(seq), 0) + 1 FROM audit_records), false)")
        op.execute("ALTER TABLE audit_records ALTER COLUMN seq "
                   "SET DEFAULT nextval('audit_records_seq_seq')")
    op.create_table('audit_tree_nodes',
    sa.Column('level', sa.Integer(), nullable=False),
    sa.Column('idx', PK, nullable=False),
    sa.Column('hash', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('level', 'idx', name='pk_audit_tree_nodes')
    )
    op.create_table('audit_checkpoints',
    sa.Column('tree_size', PK, autoincrement=False, nullable=False),
    sa.Column('root_hash', sa.String(length=64), nullable=False),
    sa.Column('signed_at', hub.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('signature', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('tree_size', name=op.f('pk_audit_checkpoints'))
    )
    op.drop_table('audit_chain_head')


def downgrade() -> None:
    conn = op.get_bind()
    if conn.execute(sa.text(
            "SELECT count(*) FROM audit_records WHERE prev_hash IS NULL")).scalar():
        raise RuntimeError("audit trail: records written after 0008 have no chain hash; "
                           "they cannot go back into a hash chain")
    head = op.create_table('audit_chain_head',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('seq', PK, nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_audit_chain_head_single_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_chain_head'))
    )
    last = conn.execute(sa.text(
        "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1")).first()
    op.bulk_insert(head, [{'id': 1, 'seq': int(last[0]) if last else 0,
                           'hash': str(last[1]) if last else '0' * 64}])
    op.drop_table('audit_checkpoints')
    op.drop_table('audit_tree_nodes')
    if conn.dialect.name == 'postgresql':
        op.execute("ALTER TABLE audit_records ALTER COLUMN seq DROP DEFAULT")
        op.execute("DROP SEQUENCE audit_records_seq_seq")
    op.drop_index('ix_audit_records_unsealed', table_name='audit_records')
    op.drop_index('ix_audit_records_leaf', table_name='audit_records')
    with op.batch_alter_table('audit_records', schema=None) as batch_op:
        batch_op.drop_column('leaf_index')
        batch_op.drop_column('leaf_hash')
        batch_op.alter_column('hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column('prev_hash', existing_type=sa.String(length=64), nullable=False)
