"""Reading residents, plates, visitor requests, pictures and gate decisions (for the API and the console
pages; no SQL in views)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, false, func, select

from cloud.db import schema as t
from cloud.gate import tables as g


def residents(site_id: str, unit: str | None = None) -> Select[Any]:
    c = g.residents.c
    q = select(g.residents).where(c.site_id == site_id).order_by(c.id)
    return q.where(c.unit == unit) if unit else q


def plates(site_id: str, holder: str | None = None) -> Select[Any]:
    c = g.plates.c
    q = select(g.plates).where(c.site_id == site_id).order_by(c.plate)
    return q.where(c.holder == holder) if holder else q


def visitor_requests(site: str | None, unit: str | None, status: str | None) -> Select[Any]:
    """Visitor requests, newest first (``None``: any)."""
    c = g.visitor_requests.c
    q = select(g.visitor_requests).order_by(c.created_ms.desc())
    for col, v in ((c.site_id, site), (c.unit, unit), (c.status, status)):
        if v is not None:
            q = q.where(col == v)
    return q


def flat_visitor_requests(site: str, unit: str | None, status: str | None = None) -> Select[Any]:
    """One flat's visitor requests, newest first: a resident's own (one without a flat has none)."""
    q = visitor_requests(site, unit, status)
    return q if unit is not None else q.where(false())


def media(conn: Connection, device_id: str, ref: str, unit_of: tuple[str, str] | None = None) -> Any:
    """A picture a device sent (data, content type), or None; ``unit_of`` (site, unit): only the snapshot of a
    visitor to that flat, taken by the gate that raised the request."""
    m = g.media.c
    row = conn.execute(select(m.data, m.content_type).where(m.device_id == device_id, m.ref == ref)).first()
    if row is None or unit_of is None:
        return row
    c = g.visitor_requests.c
    site, unit = unit_of
    mine = conn.execute(
        select(c.request_id).where(c.snapshot_ref == ref, c.device_id == device_id, c.unit == unit, c.site_id == site)
    ).first()
    return row if mine else None


def decisions(site: str | None, device: str | None, since_ms: int | None) -> Select[Any]:
    """Gate and barrier decisions, newest first."""
    c = t.messages.c
    q = (
        select(c.device_id, c.site_id, c.received_ms, c.device_ts, c.body)
        .where(c.type == "gate.decision")
        .order_by(c.received_ms.desc(), c.id.desc())
    )
    for col, v in ((c.site_id, site), (c.device_id, device)):
        if v is not None:
            q = q.where(col == v)
    if since_ms is not None:
        q = q.where(c.received_ms >= since_ms)
    return q


def residents_with_faces(site: str | None, limit: int = 500) -> Select[Any]:
    """Residents with how many faces each has enrolled, by site, flat and id."""
    r, f = g.residents.c, g.resident_faces.c
    q = (
        select(r.id, r.site_id, r.unit, r.name, r.consent_ms, r.consent_by, func.count(f.id).label("faces"))
        .select_from(g.residents.outerjoin(g.resident_faces, f.resident_id == r.id))
        .group_by(r.id, r.site_id, r.unit, r.name, r.consent_ms, r.consent_by)
        .order_by(r.site_id, r.unit, r.id)
        .limit(limit)
    )
    return q.where(r.site_id == site) if site else q


def plates_of(conn: Connection, site_id: str, holder: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            select(g.plates.c.plate).where(g.plates.c.site_id == site_id, g.plates.c.holder == holder)
        )
    ]
