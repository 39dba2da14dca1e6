"""resident consent, face-data erasures, gate sync state

Revision ID: 0008
Revises: 0007
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('residents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('consent_ms', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('consent_by', sa.String(length=64), nullable=True))
    op.create_table('gate_sync',
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('what', sa.String(length=12), nullable=False),
    sa.Column('site_id', sa.String(length=64), nullable=False),
    sa.Column('revision', sa.BigInteger(), nullable=False),
    sa.Column('updated_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('device_id', 'what')
    )
    op.create_table('erasures',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('resident_id', sa.String(length=64), nullable=False),
    sa.Column('site_id', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=16), nullable=False),
    sa.Column('revision', sa.BigInteger(), nullable=False),
    sa.Column('requested_ms', sa.BigInteger(), nullable=False),
    sa.Column('by', sa.String(length=64), nullable=False),
    sa.Column('completed_ms', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('erasures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_erasures_resident_id'), ['resident_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('erasures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_erasures_resident_id'))
    op.drop_table('erasures')
    op.drop_table('gate_sync')
    with op.batch_alter_table('residents', schema=None) as batch_op:
        batch_op.drop_column('consent_by')
        batch_op.drop_column('consent_ms')
