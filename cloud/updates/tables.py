"""Update bundles and rollouts (migration 0010)."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Float, Index, Integer, String, Table, Text

from cloud.db.schema import metadata

update_bundles = Table(
    "update_bundles",
    metadata,
    Column("id", String(64), primary_key=True),  # "{kind}-{version}"
    Column("kind", String(32), nullable=False),
    Column("version", String(40), nullable=False),
    Column("min_version", String(40)),
    Column("sha256", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("files", Integer, nullable=False),
    Column("notes", Text, nullable=False, default=""),
    Column("path", String(300), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("created_by", String(64), nullable=False),
)

rollouts = Table(
    "rollouts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("bundle_id", String(64), nullable=False),
    Column("target", JSON, nullable=False),  # {site, kind, devices}
    Column("rate_per_min", Float, nullable=False),
    Column("max_failure_ratio", Float, nullable=False),
    Column("min_executed", Integer, nullable=False),  # devices finished before the ratio is judged
    Column("timeout_s", Float, nullable=False),
    Column("state", String(12), nullable=False),  # running / completed / aborted
    Column("reason", Text, nullable=False, default=""),
    Column("created_by", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("finished_ms", BigInteger),
)

rollout_devices = Table(
    "rollout_devices",
    metadata,
    Column("rollout_id", String(32), primary_key=True),
    Column("device_id", String(64), primary_key=True),
    Column("state", String(12), nullable=False),  # pending / sent / downloading / … / healthy / failed / skipped
    Column("reason", Text, nullable=False, default=""),
    Column("cid", String(26)),
    Column("sent_ms", BigInteger),
    Column("updated_ms", BigInteger, nullable=False),
    Index("ix_rollout_devices_state", "rollout_id", "state"),
)
