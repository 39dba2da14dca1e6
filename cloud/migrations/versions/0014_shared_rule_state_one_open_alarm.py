"""rule state shared by every process; one open alarm per (device, key) and one open rule order per (rule,
device), enforced by the database (duplicates left by concurrent workers are resolved first)

Revision ID: 0014
Revises: 0013
"""

from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rule_state',
    sa.Column('rule_id', sa.String(length=64), nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('since_ms', sa.BigInteger(), nullable=False),
    sa.Column('pending_ms', sa.BigInteger(), nullable=True),
    sa.Column('last_value', sa.Float(), nullable=True),
    sa.Column('last_ms', sa.BigInteger(), nullable=True),
    sa.Column('seen_ms', sa.BigInteger(), nullable=True),
    sa.Column('window', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('rule_id', 'device_id')
    )
    with op.batch_alter_table('rule_state', schema=None) as batch_op:
        batch_op.create_index('ix_rule_state_device', ['device_id'], unique=False)

    # several open alarms for one (device, key): the newest stays open, the others are closed as its duplicates
    op.execute(
        "UPDATE alarms SET state = 'cleared', cleared_ms = COALESCE(last_seen_ms, raised_ms), "
        "cleared_by = 'system: duplicate' "
        "WHERE state <> 'cleared' AND id < (SELECT MAX(b.id) FROM alarms b "
        "WHERE b.device_id = alarms.device_id AND b.key = alarms.key AND b.state <> 'cleared')"
    )
    with op.batch_alter_table('alarms', schema=None) as batch_op:
        batch_op.create_index(
            'uq_alarms_open', ['device_id', 'key'], unique=True,
            postgresql_where=sa.text("state <> 'cleared'"), sqlite_where=sa.text("state <> 'cleared'"),
        )
    # several open orders for one (rule, device): the oldest stays (it carries the history), the others close
    op.execute(
        "UPDATE work_orders SET state = 'closed', resolution_note = 'duplicate of an open order for the same rule' "
        "WHERE source = 'rule' AND state <> 'closed' AND id > (SELECT MIN(b.id) FROM work_orders b "
        "WHERE b.rule_id = work_orders.rule_id AND b.device_id = work_orders.device_id "
        "AND b.source = 'rule' AND b.state <> 'closed')"
    )
    with op.batch_alter_table('work_orders', schema=None) as batch_op:
        batch_op.create_index(
            'uq_work_orders_open_rule', ['rule_id', 'device_id'], unique=True,
            postgresql_where=sa.text("source = 'rule' AND state <> 'closed'"),
            sqlite_where=sa.text("source = 'rule' AND state <> 'closed'"),
        )


def downgrade() -> None:
    with op.batch_alter_table('work_orders', schema=None) as batch_op:
        batch_op.drop_index('uq_work_orders_open_rule')
    with op.batch_alter_table('alarms', schema=None) as batch_op:
        batch_op.drop_index('uq_alarms_open')
    with op.batch_alter_table('rule_state', schema=None) as batch_op:
        batch_op.drop_index('ix_rule_state_device')
    op.drop_table('rule_state')
