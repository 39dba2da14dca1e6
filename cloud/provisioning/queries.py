"""Reading claim tokens and device credentials (for the console pages; no SQL in views)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from cloud.provisioning import tables as prov


def claims(conn: Connection, limit: int = 10) -> list[dict[str, Any]]:
    """The newest claim tokens (their hashes; a token is shown once, when made)."""
    q = select(prov.claims).order_by(prov.claims.c.created_ms.desc()).limit(limit)
    return [dict(r._mapping) for r in conn.execute(q)]


def credentials(conn: Connection, limit: int = 50) -> list[dict[str, Any]]:
    """The newest device credentials issued (user names and dates; no password is kept)."""
    q = select(prov.device_credentials).order_by(prov.device_credentials.c.issued_ms.desc()).limit(limit)
    return [dict(r._mapping) for r in conn.execute(q)]
