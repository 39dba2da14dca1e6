"""Users, sessions and the audit log (migration 0007)."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, Index, Integer, String, Table

from cloud.db.schema import metadata

_pk = BigInteger().with_variant(Integer, "sqlite")

ROLES = ("admin", "operator", "department", "grid_worker", "resident")

users = Table(
    "users",
    metadata,
    Column("id", _pk, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("department_id", String(64)),  # department users see their own department's work
    Column("resident_id", String(64)),  # resident users: their own flat's visitors and cars
    Column("language", String(8), nullable=False, default="en"),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_ms", BigInteger, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # sha256 of the cookie value; the value itself is not kept
    Column("user_id", BigInteger, nullable=False, index=True),
    Column("csrf", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", _pk, primary_key=True, autoincrement=True),
    Column("at_ms", BigInteger, nullable=False),
    Column("username", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(200), nullable=False, default=""),
    Column("detail", JSON, nullable=False, default=dict),
    Index("ix_audit_log_at", "at_ms"),
)
