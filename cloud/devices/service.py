"""Registering sites and devices (the registry of what may speak to the cloud)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select

from cloud.db import schema as t
from cloud.ingest.store import now_ms
from cloud.provisioning.service import signing_key_holder


class DeviceError(ValueError):
    """A registration the registry cannot take; ``conflict``: it clashes with what exists."""

    def __init__(self, message: str, conflict: bool = False) -> None:
        super().__init__(message)
        self.conflict = conflict


@dataclass(frozen=True, slots=True)
class NewDevice:
    id: str
    site_id: str
    kind: str = "gateway"
    name: str = ""
    signing_key: str | None = None

    def row(self, now: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "site_id": self.site_id,
            "kind": self.kind,
            "name": self.name or self.id,
            "status": "unknown",
            "created_ms": now,
            "signing_key": self.signing_key,
        }


def _sites_exist(conn: Connection, sites: set[str]) -> None:
    known = {r[0] for r in conn.execute(select(t.sites.c.id).where(t.sites.c.id.in_(sites)))}
    if missing := sites - known:
        names = repr(next(iter(missing))) if len(missing) == 1 else str(sorted(missing))
        verb = "does not exist; create it first" if len(missing) == 1 else "do not exist; create them first"
        raise DeviceError(f"{'site' if len(missing) == 1 else 'sites'} {names} {verb} (POST /api/sites)")


def create_device(engine: Engine, d: NewDevice) -> None:
    with engine.begin() as conn:
        if (holder := signing_key_holder(conn, d.signing_key, d.id)) is not None:
            raise DeviceError(f"this signing key is registered for {holder}: each gateway makes its own", True)
        _sites_exist(conn, {d.site_id})
        if conn.execute(select(t.devices.c.id).where(t.devices.c.id == d.id)).first():
            raise DeviceError(f"device {d.id!r} exists", True)
        conn.execute(t.devices.insert().values(**d.row(now_ms())))


def create_devices(engine: Engine, devices: Sequence[NewDevice]) -> int:
    """Register many devices at once (a district's nodes); existing ids are left as they are. Returns how many
    were new."""
    with engine.begin() as conn:
        _sites_exist(conn, {d.site_id for d in devices})
        have = {r[0] for r in conn.execute(select(t.devices.c.id))}
        new = [d for d in {d.id: d for d in devices}.values() if d.id not in have]
        keyed = [d for d in new if d.signing_key]
        keys = [d.signing_key for d in keyed]
        taken = [h for d in keyed if (h := signing_key_holder(conn, d.signing_key, d.id)) is not None]
        if len(set(keys)) != len(keys) or taken:
            raise DeviceError("a signing key is given twice or is registered already: each gateway makes its own", True)
        now = now_ms()
        if new:
            conn.execute(t.devices.insert(), [d.row(now) for d in new])
    return len(new)
