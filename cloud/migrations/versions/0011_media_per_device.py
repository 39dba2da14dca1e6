"""pictures are keyed by the device that sent them and its ref: one device can no longer take another's ref

Revision ID: 0011
Revises: 0010
"""

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a table rebuilt with the new primary key (SQLite cannot change one in place; PostgreSQL just follows)
    op.create_table('media_new',
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('ref', sa.String(length=64), nullable=False),
    sa.Column('content_type', sa.String(length=32), nullable=False),
    sa.Column('purpose', sa.String(length=64), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('received_ms', sa.BigInteger(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('device_id', 'ref')
    )
    op.execute(
        "INSERT INTO media_new (device_id, ref, content_type, purpose, data, received_ms, note) "
        "SELECT device_id, ref, content_type, purpose, data, received_ms, note FROM media"
    )
    with op.batch_alter_table('media', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_media_received_ms'))
    op.drop_table('media')
    op.rename_table('media_new', 'media')
    with op.batch_alter_table('media', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_media_received_ms'), ['received_ms'], unique=False)


def downgrade() -> None:
    raise NotImplementedError("pictures keyed by ref alone could collide across devices; restore a backup instead")
