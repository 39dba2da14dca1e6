"""Registry tables (migration 0002)."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Float, ForeignKey, Index, String, Table, Text

from cloud.db.schema import metadata

departments = Table(
    "departments",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("contact", String(200), nullable=False, default=""),
    Column("created_ms", BigInteger, nullable=False),
    Column("sla_hours", JSON),  # priority → hours to resolve, overriding the defaults
)

grid_cells = Table(
    "grid_cells",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False, default=""),
    Column("worker_name", String(200), nullable=False, default=""),
    Column("worker_contact", String(200), nullable=False, default=""),
    Column("created_ms", BigInteger, nullable=False),
)

assets = Table(
    "assets",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("subtype", String(48), nullable=False, default=""),
    Column("department_id", String(64), ForeignKey("departments.id"), nullable=True),
    Column("grid_cell_id", String(64), ForeignKey("grid_cells.id"), nullable=True),
    Column("lat", Float),
    Column("lon", Float),
    Column("device_id", String(64)),
    Column("install_date", String(10)),
    Column("notes", Text, nullable=False, default=""),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Index("ix_assets_department", "department_id"),
    Index("ix_assets_grid_cell", "grid_cell_id"),
    Index("ix_assets_kind_subtype", "kind", "subtype"),
    Index("ix_assets_device", "device_id"),
)

#: Asset subtypes only their owning department and admins may see (public security video, confidential lines):
#: their assets, and the alarms and work orders on them, are left out for everyone else (migration 0012).
confidential_subtypes = Table(
    "confidential_subtypes",
    metadata,
    Column("subtype", String(48), primary_key=True),
    Column("marked_ms", BigInteger, nullable=False),
    Column("marked_by", String(100), nullable=False, default=""),
)
