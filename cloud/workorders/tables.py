"""Work-order tables (migration 0004)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, String, Table, Text, text

from cloud.db.schema import metadata

work_orders = Table(
    "work_orders",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("title", String(200), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("source", String(16), nullable=False),  # rule / operator / grid_worker
    Column("rule_id", String(64)),
    Column("asset_id", String(64)),
    Column("device_id", String(64)),
    Column("alarm_id", BigInteger),
    Column("department_id", String(64)),
    Column("grid_cell_id", String(64)),
    Column("priority", String(8), nullable=False),  # urgent / high / normal / low
    Column("state", String(16), nullable=False),  # reported / dispatched / accepted / resolved / closed
    Column("reporter", String(100), nullable=False, default=""),
    Column("lat", Float),
    Column("lon", Float),
    Column("created_ms", BigInteger, nullable=False),
    Column("due_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("resolution_note", Text, nullable=False, default=""),
    Column("suggested_asset_id", String(64)),
    Column("suggested_distance_m", Float),
    Index("ix_work_orders_state", "state", "due_ms"),
    Index("ix_work_orders_department", "department_id", "state"),
    # one open order per (rule, device), however many workers see the rule fire
    Index(
        "uq_work_orders_open_rule",
        "rule_id",
        "device_id",
        unique=True,
        postgresql_where=text("source = 'rule' AND state <> 'closed'"),
        sqlite_where=text("source = 'rule' AND state <> 'closed'"),
    ),
    Index("ix_work_orders_rule_device", "rule_id", "device_id", "state"),
)

work_order_photos = Table(
    "work_order_photos",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("work_order_id", BigInteger, nullable=False, index=True),
    Column("stage", String(8), nullable=False),  # before / after
    Column("path", String(300), nullable=False),
    Column("thumb_path", String(300), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("by", String(100), nullable=False, default=""),
)

work_order_history = Table(
    "work_order_history",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("work_order_id", BigInteger, nullable=False, index=True),
    Column("at_ms", BigInteger, nullable=False),
    Column("action", String(16), nullable=False),
    Column("by", String(100), nullable=False),
    Column("note", Text, nullable=False, default=""),
)
