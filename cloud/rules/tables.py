"""The rules' state per (rule, device), shared by every process that evaluates rules (migration 0014).

A row is read and written only under the device's lock (``pg_advisory_xact_lock``), so the workers that split a
device's messages see one consistent story: whether the rule is active and since when, a breach waiting for its
duration, the rate window, the last time the device was heard (absence).
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, Float, Index, String, Table

from cloud.db.schema import metadata

rule_state = Table(
    "rule_state",
    metadata,
    Column("rule_id", String(64), primary_key=True),
    Column("device_id", String(64), primary_key=True),
    Column("active", Boolean, nullable=False),
    Column("since_ms", BigInteger, nullable=False),
    Column("pending_ms", BigInteger),  # a breach waiting for the rule's duration, since
    Column("last_value", Float),
    Column("last_ms", BigInteger),  # absence: when the device was last heard
    Column("seen_ms", BigInteger),  # the newest observation applied (older ones arriving late are ignored)
    Column("window", JSON),  # rate: [[ms, value], …]
    Index("ix_rule_state_device", "device_id"),
)
