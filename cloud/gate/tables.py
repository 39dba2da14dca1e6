"""Community gate tables (migration 0006): residents and their face embeddings, the vehicle allow-list, the
change logs that gateways catch up from, visitor requests, and media (visitor snapshots)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, String, Table, Text

from cloud.db.schema import metadata

_pk = BigInteger().with_variant(Integer, "sqlite")

residents = Table(
    "residents",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("site_id", String(64), nullable=False, index=True),
    Column("unit", String(16)),
    Column("name", String(200), nullable=False, default=""),
    Column("created_ms", BigInteger, nullable=False),
    # consent to face recognition (sensitive personal information): faces are refused without it
    Column("consent_ms", BigInteger),
    Column("consent_by", String(64)),
)

resident_faces = Table(
    "resident_faces",
    metadata,
    Column("id", _pk, primary_key=True, autoincrement=True),
    Column("resident_id", String(64), nullable=False, index=True),
    Column("embedding", LargeBinary, nullable=False),  # 128 little-endian float32; no face image is kept
    Column("created_ms", BigInteger, nullable=False),
)

# one row per change; a gateway at revision r gets every row with revision > r (or a full snapshot when the
# log has been trimmed past r)
gallery_log = Table(
    "gallery_log",
    metadata,
    Column("revision", _pk, primary_key=True, autoincrement=True),
    Column("site_id", String(64), nullable=False),
    Column("resident_id", String(64), nullable=False),
    Column("op", String(8), nullable=False),  # upsert / delete
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_gallery_log_site", "site_id", "revision"),
)

plates = Table(
    "plates",
    metadata,
    Column("site_id", String(64), primary_key=True),
    Column("plate", String(16), primary_key=True),  # normal form (protocol.plates)
    Column("holder", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("valid_from_ms", BigInteger),
    Column("valid_until_ms", BigInteger),
    Column("created_ms", BigInteger, nullable=False),
)

allowlist_log = Table(
    "allowlist_log",
    metadata,
    Column("revision", _pk, primary_key=True, autoincrement=True),
    Column("site_id", String(64), nullable=False),
    Column("plate", String(16), nullable=False),
    Column("op", String(8), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_allowlist_log_site", "site_id", "revision"),
)

visitor_requests = Table(
    "visitor_requests",
    metadata,
    Column("request_id", String(26), primary_key=True),
    Column("site_id", String(64), nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("door", String(64), nullable=False),
    Column("unit", String(16), nullable=False, index=True),
    Column("snapshot_ref", String(64)),
    Column("status", String(12), nullable=False),  # pending / approved / denied / expired
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("answered_by", String(64)),
    Column("answered_ms", BigInteger),
    Index("ix_visitor_requests_status", "status", "expires_ms"),
)

# a picture is named by the device that sent it and the ref that device chose (migration 0011)
media = Table(
    "media",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("ref", String(64), primary_key=True),
    Column("content_type", String(32), nullable=False),
    Column("purpose", String(64), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("received_ms", BigInteger, nullable=False, index=True),
    Column("note", Text, nullable=False, default=""),
)


# the revision each gate / barrier last reported having applied (gallery.applied / gallery.status events)
gate_sync = Table(
    "gate_sync",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("what", String(12), primary_key=True),  # gallery / allowlist
    Column("site_id", String(64), nullable=False),
    Column("revision", BigInteger, nullable=False),  # wire revision
    Column("updated_ms", BigInteger, nullable=False),
    # what a gate with an empty copy asked with: the documents sent to it carry it back (edge.trust)
    Column("nonce", String(32)),
)

# a resident's face data to be erased from every gate of the site: done when each gate reports a revision at
# or past ``revision``
erasures = Table(
    "erasures",
    metadata,
    Column("id", _pk, primary_key=True, autoincrement=True),
    Column("resident_id", String(64), nullable=False, index=True),
    Column("site_id", String(64), nullable=False),
    Column("reason", String(16), nullable=False),  # deleted / withdrawn
    Column("revision", BigInteger, nullable=False),  # wire revision that removes the faces
    Column("requested_ms", BigInteger, nullable=False),
    Column("by", String(64), nullable=False),
    Column("completed_ms", BigInteger),
)
