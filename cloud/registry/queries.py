"""Reading and marking the asset registry (for the API and the console pages; no SQL in views)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Select, delete, func, insert, select

from cloud.auth.scope import asset_filter
from cloud.auth.service import User
from cloud.registry.tables import assets, confidential_subtypes, departments, grid_cells


def confidential(conn: Connection) -> list[str]:
    """The asset subtypes marked confidential."""
    c = confidential_subtypes.c
    return [r[0] for r in conn.execute(select(c.subtype).order_by(c.subtype))]


def subtypes_in_use(conn: Connection) -> set[str]:
    return set(conn.execute(select(assets.c.subtype).distinct()).scalars())


def mark_confidential(engine: Engine, subtypes: Sequence[str], by: str, at: int) -> list[str]:
    """Replace the list of confidential subtypes; return the list before."""
    with engine.begin() as conn:
        before = confidential(conn)
        conn.execute(delete(confidential_subtypes))
        if subtypes:
            conn.execute(
                insert(confidential_subtypes), [{"subtype": s, "marked_ms": at, "marked_by": by} for s in subtypes]
            )
    return before


def all_departments() -> Select[Any]:
    return select(departments).order_by(departments.c.id)


def all_grid_cells() -> Select[Any]:
    return select(grid_cells).order_by(grid_cells.c.id)


def assets_of(user: User, **where: str | None) -> Select[Any]:
    """Assets this user may see, by id; ``where``: column = value filters (kind, subtype, department_id,
    grid_cell_id, device_id), empty ones ignored."""
    c = assets.c
    q = select(assets).where(asset_filter(user)).order_by(c.id)
    for col, value in where.items():
        if value:
            q = q.where(c[col] == value)
    return q


def asset(conn: Connection, user: User, asset_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(assets).where(assets.c.id == asset_id, asset_filter(user))).first()
    return None if row is None else dict(row._mapping)


def count(conn: Connection, q: Select[Any]) -> int:
    return int(conn.execute(select(func.count()).select_from(q.subquery())).scalar_one())


def positions(conn: Connection, q: Select[Any], limit: int = 20_000) -> list[tuple[Any, ...]]:
    """(lat, lon, department, cell, id) of the assets ``q`` selects that have a position (for the map)."""
    c = assets.c
    rows = conn.execute(
        select(c.lat, c.lon, c.department_id, c.grid_cell_id, c.id)
        .where(c.id.in_(select(q.subquery().c.id)), c.lat.is_not(None), c.lon.is_not(None))
        .limit(limit)
    )
    return [tuple(r) for r in rows]


def kinds_of(conn: Connection, user: User) -> list[str]:
    c = assets.c
    return [r[0] for r in conn.execute(select(c.kind).where(asset_filter(user)).distinct().order_by(c.kind))]


def department_names(conn: Connection) -> list[dict[str, Any]]:
    d = departments.c
    return [dict(r._mapping) for r in conn.execute(select(d.id, d.name).order_by(d.id))]


def grid_cell_ids(conn: Connection) -> list[str]:
    return [r[0] for r in conn.execute(select(grid_cells.c.id).order_by(grid_cells.c.id))]
