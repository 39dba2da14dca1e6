"""Alarm tables: one row per alarm (one open per device and key), and every step of its lifecycle."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, String, Table, Text, text

from cloud.db.schema import metadata

alarms = Table(
    "alarms",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("device_id", String(64), nullable=False),
    Column("key", String(128), nullable=False),
    Column("code", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("message", Text, nullable=False, default=""),
    Column("details", JSON),
    Column("state", String(16), nullable=False),  # active / cleared
    Column("raised_ms", BigInteger, nullable=False),
    Column("cleared_ms", BigInteger),
    Column("msg_id", String(26), nullable=False),
    Column("occurrences", Integer, nullable=False, server_default="1"),
    Column("last_seen_ms", BigInteger),
    Column("acked_ms", BigInteger),
    Column("acked_by", String(100)),
    Column("cleared_by", String(100)),
    Index("ix_alarms_device_key", "device_id", "key", "state"),
    Index("ix_alarms_state", "state", "raised_ms"),
    # one open alarm per (device, key), however many workers raise it at once
    Index(
        "uq_alarms_open",
        "device_id",
        "key",
        unique=True,
        postgresql_where=text("state <> 'cleared'"),
        sqlite_where=text("state <> 'cleared'"),
    ),
)

alarm_history = Table(
    "alarm_history",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("alarm_id", BigInteger, nullable=False, index=True),
    Column("at_ms", BigInteger, nullable=False),
    Column("action", String(16), nullable=False),  # raised / repeated / acknowledged / cleared
    Column("by", String(100), nullable=False),  # "device" or the operator
    Column("note", Text, nullable=False, default=""),
)
