"""Who may do what, in one place: the API, the console pages and the live channel all ask here.

Roles: ``admin`` (everything, accounts), ``operator`` (the command centre: everything but accounts),
``department`` (its own department's alarms and work orders), ``grid_worker`` (reports issues, sees its own
reports), ``resident`` (its own flat's visitors, cars and parking).

Assets of a subtype marked confidential in the registry (public security video, confidential lines), and the
alarms and work orders on them, are seen only by admins and the department that owns the asset.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, false, or_, select, true

from cloud.alarms import tables as alarm_tables
from cloud.auth.service import User
from cloud.db import schema as t
from cloud.registry.confidential import confidential_assets, confidential_devices, is_confidential
from cloud.registry.tables import assets
from cloud.workorders.tables import work_orders

_STAFF = frozenset({"admin", "operator"})
PERMS: dict[str, frozenset[str]] = {
    "overview": _STAFF | {"department"},
    "devices.view": _STAFF,
    "devices.command": _STAFF,
    "devices.provision": _STAFF,  # claim tokens, revocation, credential rotation
    "devices.reinstate": frozenset({"admin"}),  # a revoked device may be claimed again
    "updates.manage": _STAFF,  # bundles and rollouts
    "alarms.view": _STAFF | {"department"},
    "alarms.act": _STAFF | {"department"},
    "workorders.view": _STAFF | {"department", "grid_worker"},
    "workorders.create": _STAFF,
    "workorders.dispatch": _STAFF,
    "workorders.work": _STAFF | {"department"},  # accept, resolve, photos
    "workorders.close": _STAFF,
    "workorders.report": _STAFF | {"grid_worker"},
    "assets.view": _STAFF | {"department"},
    "registry.confidential": frozenset({"admin"}),  # which subtypes only their department may see
    "gate.view": _STAFF,
    "residents.manage": _STAFF,
    "parking.view": _STAFF,
    "elevators.view": _STAFF,
    "sensors.view": _STAFF,  # gas, perimeter, throwing, water
    "rules.view": _STAFF,
    "rules.reload": frozenset({"admin"}),
    "visitors.answer": _STAFF | {"resident"},
    "parking.retrieve": _STAFF | {"resident"},
    "users.manage": frozenset({"admin"}),
}


def can(user: User, perm: str) -> bool:
    return user.role in PERMS[perm]


def home(user: User) -> str:
    """Where a user lands after logging in."""
    return {"grid_worker": "/console/m/report", "resident": "/console/m/home"}.get(user.role, "/console/")


def device_filter(user: User, column: Any = None) -> ColumnElement[bool]:
    """The devices (or rows about devices, by their ``column``) this user may see: an operator does not see
    devices fitted to confidential assets (their readings, events and commands would tell what the registry
    keeps from them)."""
    if user.role == "operator":
        return (t.devices.c.id if column is None else column).not_in(confidential_devices())
    return true()


def can_see_device(conn: Any, user: User, device_id: str) -> bool:
    if user.role != "operator":
        return True
    q = select(assets.c.id).where(assets.c.device_id == device_id, is_confidential()).limit(1)
    return conn.execute(q).first() is None


def asset_filter(user: User) -> ColumnElement[bool]:
    """The registry rows this user may see."""
    if user.role == "admin":
        return true()
    open_ = ~is_confidential()
    if user.role == "operator":
        return open_
    if user.role == "department" and user.department_id:
        return or_(open_, assets.c.department_id == user.department_id)
    return false()


def work_order_filter(user: User) -> ColumnElement[bool]:
    c = work_orders.c
    if user.role == "admin":
        return true()
    if user.role == "operator":
        return and_(
            or_(c.asset_id.is_(None), c.asset_id.not_in(confidential_assets())),
            or_(c.device_id.is_(None), c.device_id.not_in(confidential_devices())),
            or_(c.suggested_asset_id.is_(None), c.suggested_asset_id.not_in(confidential_assets())),
        )
    if user.role == "department":
        return c.department_id == user.department_id if user.department_id else false()
    if user.role == "grid_worker":
        return c.reporter == user.username
    return false()


def department_devices(department_id: str) -> Any:
    """Devices fitted to the department's assets (a subquery)."""
    return select(assets.c.device_id).where(assets.c.department_id == department_id, assets.c.device_id.is_not(None))


def alarm_filter(user: User) -> ColumnElement[bool]:
    if user.role == "admin":
        return true()
    if user.role == "operator":
        return alarm_tables.alarms.c.device_id.not_in(confidential_devices())
    if user.role == "department" and user.department_id:
        return alarm_tables.alarms.c.device_id.in_(department_devices(user.department_id))
    return false()


def sees_event(user: User, ev: dict[str, Any]) -> bool:
    """Whether a live-channel event is for this user (alarm and work-order events carry ``department_id`` and
    ``confidential``; an event not yet labelled is treated as confidential)."""
    kind = ev.get("kind")
    if kind in ("resync", "closed"):
        return True
    if user.role == "admin":
        return True
    if user.role == "operator":
        if kind in ("alarm", "workorder"):
            return ev.get("confidential") is False
        return not ev.get("confidential")  # device, gate, visitor events: labelled when their device is secret
    if user.role == "department" and user.department_id:
        return kind in ("alarm", "workorder") and ev.get("department_id") == user.department_id
    return False  # residents' and grid workers' phone views poll their own short lists
