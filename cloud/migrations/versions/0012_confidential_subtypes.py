"""asset subtypes marked confidential: seen only by their owning department and admins

Revision ID: 0012
Revises: 0011
"""

from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

#: what the pilot districts' registries mark confidential from the start
SEEDED = ('public_security_video', 'military_confidential')


def upgrade() -> None:
    table = op.create_table('confidential_subtypes',
    sa.Column('subtype', sa.String(length=48), nullable=False),
    sa.Column('marked_ms', sa.BigInteger(), nullable=False),
    sa.Column('marked_by', sa.String(length=100), nullable=False),
    sa.PrimaryKeyConstraint('subtype')
    )
    op.bulk_insert(table, [{'subtype': s, 'marked_ms': 0, 'marked_by': 'migration 0012'} for s in SEEDED])


def downgrade() -> None:
    op.drop_table('confidential_subtypes')
