"""Reading what devices reported (for the API and the console pages; no SQL in views)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Select, func, select

from cloud.alarms import tables as alarm_tables
from cloud.auth.scope import device_filter
from cloud.auth.service import User
from cloud.db import schema as t


def latest_messages(
    conn: Connection, type_: str, key: str, devices: list[str], limit: int = 2000
) -> dict[str, dict[str, Any]]:
    """The newest message of ``type_`` per device and ``key`` (lift, car)."""
    c = t.messages.c
    out: dict[str, dict[str, Any]] = {}
    rows = conn.execute(
        select(c.device_id, c.body, c.received_ms)
        .where(c.type == type_, c.device_id.in_(devices))
        .order_by(c.received_ms.desc(), c.id.desc())
        .limit(limit)
    )
    for r in rows:
        out.setdefault(f"{r.device_id}/{r.body.get(key)}", {**r.body, "device_id": r.device_id, "at": r.received_ms})
    return out


def sites() -> Select[Any]:
    return select(t.sites).order_by(t.sites.c.id)


def devices(user: User, site: str | None, kind: str | None, status: str | None) -> Select[Any]:
    """The devices this user may see, by site and id."""
    c = t.devices.c
    q = select(t.devices).where(device_filter(user)).order_by(c.site_id, c.id)
    if site:
        q = q.where(c.site_id == site)
    if kind:
        q = q.where(c.kind == kind)
    if status:
        q = q.where(c.status == status)
    return q


def device(conn: Connection, user: User, device_id: str) -> dict[str, Any] | None:
    """One device this user may see, with how many of its alarms are open."""
    row = conn.execute(select(t.devices).where(t.devices.c.id == device_id, device_filter(user))).first()
    if row is None:
        return None
    d = dict(row._mapping)
    a = alarm_tables.alarms.c
    d["open_alarms"] = conn.execute(
        select(func.count()).select_from(alarm_tables.alarms).where(a.device_id == device_id, a.state != "cleared")
    ).scalar_one()
    return d


def telemetry(
    conn: Connection, device_id: str, metric: str, since: int, until: int, bucket_s: float | None, limit: int
) -> list[dict[str, Any]]:
    """A metric's readings between two times, or their avg/min/max/count per bucket of ``bucket_s``."""
    c = t.telemetry.c
    where = (c.device_id == device_id, c.metric == metric, c.ts >= since, c.ts <= until)
    if bucket_s is None:
        rows = conn.execute(select(c.ts, c.value).where(*where).order_by(c.ts).limit(limit))
        return [{"ts": r.ts, "value": r.value} for r in rows]
    width = max(1, int(bucket_s * 1000))  # a bucket under a millisecond is a millisecond
    b = ((c.ts - since) // width).label("b")
    rows = conn.execute(
        select(b, func.avg(c.value), func.min(c.value), func.max(c.value), func.count())
        .where(*where)
        .group_by(b)
        .order_by(b)
        .limit(limit)
    )
    return [
        {"ts": since + int(bb) * width, "avg": avg, "min": lo, "max": hi, "count": n}
        for bb, avg, lo, hi, n in (tuple(r) for r in rows)
    ]


def messages(user: User, device: str | None, type_: str | None, since: int | None) -> Select[Any]:
    """Stored messages this user may see, newest first."""
    c = t.messages.c
    q = select(t.messages).where(device_filter(user, c.device_id)).order_by(c.received_ms.desc(), c.id.desc())
    if device:
        q = q.where(c.device_id == device)
    if type_:
        q = q.where(c.type == type_)
    if since is not None:
        q = q.where(c.received_ms >= since)
    return q


def dead_letters(reason: str | None) -> Select[Any]:
    c = t.dead_letters.c
    q = select(c.id, c.received_ms, c.topic, c.reason, c.detail, c.device_id, c.size).order_by(c.id.desc())
    return q.where(c.reason == reason) if reason else q


def dead_letter_summary(conn: Connection) -> dict[str, int]:
    c = t.dead_letters.c
    return {r[0]: r[1] for r in conn.execute(select(c.reason, func.count()).group_by(c.reason))}


def command(conn: Connection, user: User, cid: str, now: int) -> dict[str, Any] | None:
    """A command this user may see; ``sent`` past its deadline reads ``expired``."""
    c = t.commands.c
    row = conn.execute(select(t.commands).where(c.cid == cid, device_filter(user, c.device_id))).first()
    if row is None:
        return None
    d = dict(row._mapping)
    if d["status"] == "sent" and d["deadline_ms"] < now:
        d["status"] = "expired"  # never acknowledged before its deadline
    return d


def commands(user: User, device: str | None) -> Select[Any]:
    c = t.commands.c
    q = select(t.commands).where(device_filter(user, c.device_id)).order_by(c.created_ms.desc())
    return q.where(c.device_id == device) if device else q


def site_ids(conn: Connection) -> list[str]:
    return [r[0] for r in conn.execute(select(t.sites.c.id).order_by(t.sites.c.id))]


def kinds(conn: Connection) -> list[str]:
    c = t.devices.c
    return [r[0] for r in conn.execute(select(c.kind).distinct().order_by(c.kind))]


def recent_metrics(conn: Connection, device_id: str, since: int) -> list[str]:
    """The metrics a device reported since ``since``."""
    c = t.telemetry.c
    q = select(c.metric).where(c.device_id == device_id, c.ts >= since).distinct().order_by(c.metric)
    return [r[0] for r in conn.execute(q)]


def count_by_kind_status(conn: Connection) -> dict[tuple[str, str], int]:
    c = t.devices.c
    q = select(c.kind, c.status, func.count().label("n")).group_by(c.kind, c.status)
    return {(r.kind, r.status): r.n for r in conn.execute(q)}


def reporting(conn: Connection, *types: str) -> list[str]:
    """Devices that sent messages of these types (elevator monitors, lift towers…), by id."""
    c = t.messages.c
    q = select(c.device_id).where(c.type.in_(types)).distinct().order_by(c.device_id)
    return [r[0] for r in conn.execute(q)]


def history(conn: Connection, device_id: str, types: Sequence[str], limit: int = 5000) -> list[dict[str, Any]]:
    """A device's messages of these types, oldest first: type, body, received_ms."""
    c = t.messages.c
    q = (
        select(c.type, c.body, c.received_ms)
        .where(c.device_id == device_id, c.type.in_(list(types)))
        .order_by(c.received_ms, c.id)
        .limit(limit)
    )
    return [dict(r._mapping) for r in conn.execute(q)]
