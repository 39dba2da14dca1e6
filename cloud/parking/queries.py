"""Reading what lift towers reported (for the API and the console pages; no SQL in views)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, select

from cloud.db import schema as t

REQUESTS = ("lift.request", "lift.result")


def lifts(conn: Connection, device_id: str) -> list[dict[str, Any]]:
    """The newest ``lift.status`` of each lift of a tower."""
    c = t.messages.c
    rows = conn.execute(
        select(c.body, c.received_ms)
        .where(c.device_id == device_id, c.type == "lift.status")
        .order_by(c.received_ms.desc(), c.id.desc())
        .limit(500)
    ).all()
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        out.setdefault(r.body["lift"], {**r.body, "received_ms": r.received_ms})
    return sorted(out.values(), key=lambda x: x["lift"])


def requests(device_id: str) -> Select[Any]:
    """A tower's requests and their results, newest first."""
    c = t.messages.c
    return (
        select(c.type, c.body, c.received_ms)
        .where(c.device_id == device_id, c.type.in_(REQUESTS))
        .order_by(c.received_ms.desc(), c.id.desc())
    )


def towers(conn: Connection, site_id: str) -> list[str]:
    """The lift towers of a site (that have reported their status), by id."""
    c = t.messages.c
    q = select(c.device_id).where(c.site_id == site_id, c.type == "lift.status").distinct()
    return sorted(r[0] for r in conn.execute(q))
