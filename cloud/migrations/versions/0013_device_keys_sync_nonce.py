"""devices carry their own signing key; a gate's sync request carries the nonce its empty copy asked with

Revision ID: 0013
Revises: 0012
"""

from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('signing_key', sa.String(length=64), nullable=True))
    with op.batch_alter_table('gate_sync', schema=None) as batch_op:
        batch_op.add_column(sa.Column('nonce', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('gate_sync', schema=None) as batch_op:
        batch_op.drop_column('nonce')
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_column('signing_key')
