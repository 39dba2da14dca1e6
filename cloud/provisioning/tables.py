"""Claim tokens and device credentials (migration 0009)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, String, Table

from cloud.db.schema import metadata

claims = Table(
    "claims",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # sha256 of the token; the token itself is shown once
    Column("site_id", String(64), nullable=False),
    Column("kind", String(32)),  # the device kind it may create (none: any)
    Column("note", String(200), nullable=False, default=""),
    Column("created_by", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("used_ms", BigInteger),
    Column("used_by", String(64)),  # the device it created
)

device_credentials = Table(
    "device_credentials",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("username", String(64), nullable=False),
    Column("issued_ms", BigInteger, nullable=False),
    Column("rotated_ms", BigInteger),
    Column("pending_cid", String(26)),  # a rotation sent to the device, applied at the broker once it acks
    Column("revoked_ms", BigInteger),
    Column("revoked_by", String(64)),
)
