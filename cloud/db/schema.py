"""The shared metadata and the device record every domain reads: sites, devices, messages, telemetry,
commands, dead letters. Each domain keeps its own tables (``cloud/<domain>/tables.py``). Times are integer
milliseconds since the Unix epoch (same on SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

sites = Table(
    "sites",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False, default=""),
    Column("created_ms", BigInteger, nullable=False),
)

devices = Table(
    "devices",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("site_id", String(64), ForeignKey("sites.id"), nullable=False, index=True),
    Column("kind", String(32), nullable=False, default="gateway"),
    Column("name", String(200), nullable=False, default=""),
    Column("status", String(16), nullable=False, default="unknown"),  # unknown / online / offline
    Column("last_seen_ms", BigInteger),
    Column("agent_version", String(64)),
    Column("health", JSON),
    Column("health_ms", BigInteger),
    Column("created_ms", BigInteger, nullable=False),
    # the device's own Ed25519 public key (base64), registered at provisioning: what it says must be signed by it
    Column("signing_key", String(64)),
)

messages = Table(
    "messages",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("msg_id", String(26), nullable=False, unique=True),
    Column("site_id", String(64), nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("type", String(32), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("device_ts", BigInteger, nullable=False),
    Column("received_ms", BigInteger, nullable=False),
    Column("body", JSON, nullable=False),
    Index("ix_messages_device_ts", "device_id", "received_ms"),
    Index("ix_messages_type_ts", "type", "received_ms"),
)

telemetry = Table(
    "telemetry",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("device_id", String(64), nullable=False),
    Column("metric", String(64), nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("value", Float, nullable=False),
    Column("unit", String(16)),
    Column("msg_id", String(26), nullable=False),
    Index("ix_telemetry_device_metric_ts", "device_id", "metric", "ts"),
    Index("ix_telemetry_ts", "ts"),
)

commands = Table(
    "commands",
    metadata,
    Column("cid", String(26), primary_key=True),
    Column("device_id", String(64), nullable=False, index=True),
    Column("name", String(64), nullable=False),
    Column("args", JSON, nullable=False),
    Column("deadline_ms", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # sent / ok / error / refused / accepted
    Column("reason", Text),
    Column("result", JSON),
    Column("created_ms", BigInteger, nullable=False),
    Column("acked_ms", BigInteger),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("received_ms", BigInteger, nullable=False),
    Column("topic", String(300), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("device_id", String(64)),
    Column("payload", LargeBinary, nullable=False),
    Column("size", Integer, nullable=False),
    Index("ix_dead_letters_reason", "reason", "received_ms"),
)
