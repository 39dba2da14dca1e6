"""A resident asks the tower for their car."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from cloud.actions import ActionError, Forbidden, NotFound, need
from cloud.auth.service import User
from cloud.db import schema as t
from cloud.devices.actions import command
from cloud.gate import tables as g
from cloud.gate.actions import resident_of
from protocol.plates import PlateError, normalize

if TYPE_CHECKING:
    from cloud.service import CloudService


def retrieve_car(svc: CloudService, user: User, device_id: str, subject: str, by: str) -> dict[str, Any]:
    """Ask a parking tower for a car; a resident only for a plate registered to them, at their own site."""
    need(user, "parking.retrieve")
    if user.role == "resident":
        me = resident_of(svc, user)
        if by != "plate":
            raise Forbidden("residents retrieve their cars by plate")
        try:
            subject = normalize(subject)
        except PlateError as exc:
            raise ActionError(str(exc)) from None
        with svc.engine.connect() as conn:
            mine = conn.execute(
                select(g.plates.c.plate).where(
                    g.plates.c.site_id == me["site_id"], g.plates.c.plate == subject, g.plates.c.holder == me["id"]
                )
            ).first()
            tower = conn.execute(
                select(t.devices.c.id).where(t.devices.c.id == device_id, t.devices.c.site_id == me["site_id"])
            ).first()
        if mine is None or tower is None:
            raise NotFound(f"no car {subject} of yours in tower {device_id}")
    out = command(svc, device_id, "lift-retrieve", {"subject": subject, "by": by}, 60)
    svc.auth.audit(user.username, "parking.retrieve", device_id, {"subject": subject})
    return out
