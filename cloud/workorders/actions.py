"""What people do with work orders: open, dispatch, accept, resolve, close, add photos."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cloud import events
from cloud.actions import ActionError, Conflict, Forbidden, NotFound, need
from cloud.auth.scope import asset_filter, can, can_see_device, work_order_filter
from cloud.auth.service import User
from cloud.registry.tables import assets
from cloud.workorders.service import WorkOrderError
from cloud.workorders.tables import work_orders

if TYPE_CHECKING:
    from cloud.service import CloudService


_WO_PERM = {
    "dispatch": "workorders.dispatch",
    "accept": "workorders.work",
    "resolve": "workorders.work",
    "close": "workorders.close",
    "reopen": "workorders.close",
}


def work_order(svc: CloudService, user: User, wo_id: int) -> dict[str, Any]:
    """One order, if this user may see it (others' orders are "not found", not "forbidden")."""
    need(user, "workorders.view")
    with svc.engine.connect() as conn:
        visible = conn.execute(
            select(work_orders.c.id).where(work_orders.c.id == wo_id, work_order_filter(user))
        ).first()
    if visible is None:
        raise NotFound(f"no work order {wo_id}")
    return svc.work_orders.get(wo_id)


def work_order_act(
    svc: CloudService, user: User, wo_id: int, action: str, note: str = "", department_id: str | None = None
) -> dict[str, Any]:
    if action not in _WO_PERM:
        raise ActionError(f"unknown action {action!r} (one of {', '.join(_WO_PERM)})")
    need(user, _WO_PERM[action])
    work_order(svc, user, wo_id)
    try:
        wo = svc.work_orders.act(wo_id, action, user.username, note, department_id)
    except LookupError as exc:
        raise NotFound(str(exc).strip("'")) from None
    except WorkOrderError as exc:
        raise Conflict(str(exc)) from None
    except IntegrityError:  # uq_work_orders_open_rule: the rule has opened another order for the device since
        raise Conflict(
            f"work order {wo_id} cannot be reopened: its rule has another open order for the same device"
        ) from None
    svc.auth.audit(user.username, f"workorder.{action}", str(wo_id), {"note": note} if note else None)
    _wo_live(svc, wo, action)
    return wo


def _wo_live(svc: CloudService, wo: dict[str, Any], event: str) -> None:
    svc.stream.publish([events.WorkOrderChanged(wo, event)])


def work_order_photo(svc: CloudService, user: User, wo_id: int, stage: str, data: bytes) -> dict[str, Any]:
    """Department staff add before/after photos; a grid worker adds "before" photos to their own report."""
    if not (can(user, "workorders.work") or (stage == "before" and can(user, "workorders.report"))):
        raise Forbidden(f"your role ({user.role}) may not add {stage} photos")
    work_order(svc, user, wo_id)
    try:
        photo = svc.work_orders.add_photo(wo_id, stage, data, user.username)
    except LookupError as exc:
        raise NotFound(str(exc).strip("'")) from None
    except WorkOrderError as exc:
        raise ActionError(str(exc)) from None
    svc.auth.audit(user.username, "workorder.photo", str(wo_id), {"stage": stage})
    return photo


def create_work_order(svc: CloudService, user: User, **fields: Any) -> dict[str, Any]:
    """Operators open orders; a grid worker's report is always theirs (source and reporter are set here)."""
    if can(user, "workorders.create"):
        fields.setdefault("source", "operator")
        fields["reporter"] = fields.get("reporter") or user.username
    else:
        need(user, "workorders.report")
        fields.update(source="grid_worker", reporter=user.username)
    asset_id, device_id = fields.get("asset_id"), fields.get("device_id")
    if asset_id or device_id:
        with svc.engine.connect() as conn:
            hidden = (
                asset_id
                and not conn.execute(select(assets.c.id).where(assets.c.id == asset_id, asset_filter(user))).first()
            ) or (device_id and not can_see_device(conn, user, device_id))
        if hidden:  # unknown or kept from this user: the same answer, so ids cannot be probed
            raise ActionError(f"no asset {asset_id!r}" if asset_id else f"no device {device_id!r}")
    try:
        wo = svc.work_orders.create(**fields)
    except WorkOrderError as exc:
        raise ActionError(str(exc)) from None
    svc.auth.audit(user.username, "workorder.create", str(wo["id"]), {"title": wo["title"]})
    _wo_live(svc, wo, "created")
    return wo
