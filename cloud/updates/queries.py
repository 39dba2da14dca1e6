"""Reading bundles and rollouts (for the API and the console pages; no SQL in views)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from cloud.updates import tables as u


def bundles(conn: Connection) -> list[dict[str, Any]]:
    """Every bundle, newest first (without where it is kept on disk)."""
    rows = conn.execute(select(u.update_bundles).order_by(u.update_bundles.c.created_ms.desc()))
    return [{k: v for k, v in r._mapping.items() if k != "path"} for r in rows]


def rollouts(conn: Connection, limit: int | None = None) -> list[dict[str, Any]]:
    """Rollouts, newest first."""
    q = select(u.rollouts).order_by(u.rollouts.c.created_ms.desc())
    return [dict(r._mapping) for r in conn.execute(q if limit is None else q.limit(limit))]
