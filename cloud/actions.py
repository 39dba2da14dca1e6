"""What people do, in one place for the API and the console: each action checks the user's rights
(:mod:`cloud.auth.scope`), does the work through the services, writes the audit log and tells the consoles on
the live channel. Errors are typed so each face can answer in its own way (HTTP status, a message on a page).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from cloud import events
from cloud.alarms import tables as alarm_tables
from cloud.alarms.lifecycle import AlarmStateError, operator_action
from cloud.auth.scope import alarm_filter, asset_filter, can, can_see_device, device_filter, work_order_filter
from cloud.auth.service import User
from cloud.commands import CommandUnknownDevice
from cloud.db import schema as t
from cloud.gate import tables as g
from cloud.gate.service import GateError
from cloud.ingest.store import now_ms
from cloud.registry.tables import assets
from cloud.workorders.service import WorkOrderError
from cloud.workorders.tables import work_orders
from protocol.plates import PlateError, normalize

if TYPE_CHECKING:
    from cloud.service import CloudService


class ActionError(Exception):
    status = 422


class Forbidden(ActionError):
    status = 403


class NotFound(ActionError):
    status = 404


class Conflict(ActionError):
    status = 409


class Unavailable(ActionError):
    status = 503


@contextlib.contextmanager
def _translated(
    invalid: tuple[type[Exception], ...] = (), conflict: tuple[type[Exception], ...] = ()
) -> Iterator[None]:
    """The services' errors as actions' own: a missing thing → NotFound, the broker away → Unavailable,
    ``conflict`` → Conflict, ``invalid`` → ActionError (422)."""
    try:
        yield
    except ActionError:
        raise
    except LookupError as exc:
        raise NotFound(f"no {str(exc).strip(chr(39))}") from None
    except conflict as exc:
        raise Conflict(str(exc)) from None
    except invalid as exc:
        raise ActionError(str(exc)) from None
    except ConnectionError as exc:
        raise Unavailable(f"{exc}; try again shortly") from None


def need(user: User, perm: str) -> None:
    if not can(user, perm):
        raise Forbidden(f"your role ({user.role}) may not do this ({perm})")


# --- alarms ----------------------------------------------------------------------------------------------


def alarm_act(svc: CloudService, user: User, alarm_id: int, action: str, note: str = "") -> dict[str, Any]:
    """``acknowledged`` or ``cleared`` by a person; department users only on their own department's alarms."""
    need(user, "alarms.act")
    try:
        with svc.engine.begin() as conn:
            if (
                conn.execute(
                    select(alarm_tables.alarms.c.id).where(alarm_tables.alarms.c.id == alarm_id, alarm_filter(user))
                ).first()
                is None
            ):
                raise NotFound(f"no alarm {alarm_id}")
            row = operator_action(conn, alarm_id, action, user.username, note, now_ms())
    except LookupError as exc:
        raise NotFound(str(exc)) from None
    except AlarmStateError as exc:
        raise Conflict(str(exc)) from None
    svc.auth.audit(user.username, f"alarm.{action}", str(alarm_id), {"note": note} if note else None)
    svc.stream.publish([events.AlarmChanged(alarm_id, row["device_id"], None, action)])
    return row


# --- work orders -----------------------------------------------------------------------------------------

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
    svc.auth.audit(user.username, f"workorder.{action}", str(wo_id), {"note": note} if note else None)
    _wo_live(svc, wo, action)
    return wo


def _wo_live(svc: CloudService, wo: dict[str, Any], event: str) -> None:
    svc.stream.publish([events.work_order(wo, event)])


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


# --- devices ---------------------------------------------------------------------------------------------


#: commands that only their own action may send (a hand-made one would leave the broker and the device apart)
RESERVED_COMMANDS = {"set-credentials": "POST /api/devices/{id}/rotate-credentials"}


def send_command(
    svc: CloudService, user: User, device_id: str, name: str, args: dict[str, Any], ttl_s: float | None = None
) -> dict[str, Any]:
    need(user, "devices.command")
    with svc.engine.connect() as conn:
        if not can_see_device(conn, user, device_id):
            raise NotFound(f"no device {device_id!r}")
    if name in RESERVED_COMMANDS:
        raise ActionError(f"{name!r} is sent by its own action only ({RESERVED_COMMANDS[name]})")
    out = _command(svc, device_id, name, args, ttl_s or svc.settings.command_ttl_s)
    svc.auth.audit(user.username, "command.send", device_id, {"name": name})
    return out


def _command(svc: CloudService, device_id: str, name: str, args: dict[str, Any], ttl_s: float) -> dict[str, Any]:
    """A signed command to a device, with the broker's and the registry's refusals as typed errors."""
    if svc.commands is None:
        raise Unavailable("command publisher not running (no broker configured)")
    try:
        return svc.commands.send(device_id, name, args, ttl_s)
    except CommandUnknownDevice:
        raise NotFound(f"no device {device_id!r}") from None
    except ConnectionError as exc:
        raise Unavailable(f"broker unavailable: {exc}; try again shortly") from None


# --- residents: visitors, cars, personal data ------------------------------------------------------------


def resident_of(svc: CloudService, user: User) -> dict[str, Any]:
    """A resident account's own record (site, flat)."""
    if user.role != "resident" or not user.resident_id:
        raise Forbidden("this is for resident accounts linked to a resident record")
    with svc.engine.connect() as conn:
        row = conn.execute(select(g.residents).where(g.residents.c.id == user.resident_id)).first()
    if row is None:
        raise NotFound(f"no resident {user.resident_id} (ask the property office)")
    return dict(row._mapping)


def answer_visitor(svc: CloudService, user: User, request_id: str, approved: bool) -> dict[str, Any]:
    need(user, "visitors.answer")
    if user.role == "resident":
        me = resident_of(svc, user)
        with svc.engine.connect() as conn:
            req = conn.execute(
                select(g.visitor_requests.c.unit, g.visitor_requests.c.site_id).where(
                    g.visitor_requests.c.request_id == request_id
                )
            ).first()
        if req is None or (req.unit, req.site_id) != (me["unit"], me["site_id"]):
            raise NotFound(f"no visitor request {request_id} for your flat")
    try:
        out: dict[str, Any] = svc.gate.answer(request_id, approved, user.username)
    except LookupError as exc:
        raise NotFound(f"no {str(exc).strip(chr(39))}") from None
    except GateError as exc:
        raise Conflict(str(exc)) from None
    except ConnectionError as exc:
        raise Unavailable(f"{exc}; try again when the broker is back") from None
    svc.auth.audit(user.username, "visitor.approve" if approved else "visitor.deny", request_id)
    return out


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
    out = _command(svc, device_id, "lift-retrieve", {"subject": subject, "by": by}, 60)
    svc.auth.audit(user.username, "parking.retrieve", device_id, {"subject": subject})
    return out


def erase_resident(svc: CloudService, user: User, resident_id: str, reason: str) -> dict[str, Any]:
    """``deleted`` (the resident leaves) or ``withdrawn`` (consent to face recognition withdrawn): either way
    their faces leave every gate."""
    need(user, "residents.manage")
    fn = svc.gate.remove_resident if reason == "deleted" else svc.gate.withdraw_consent
    with _translated():
        out = fn(resident_id, user.username)
    svc.auth.audit(user.username, f"resident.{reason}", resident_id, {"revision": out["revision"]})
    return out


def record_consent(svc: CloudService, user: User, resident_id: str) -> dict[str, Any]:
    need(user, "residents.manage")
    with _translated():
        out = svc.gate.record_consent(resident_id, user.username)
    svc.auth.audit(user.username, "resident.consent", resident_id)
    return out


def reload_rules(svc: CloudService, user: User) -> dict[str, Any]:
    from cloud.rules.model import RulesError, load_rules_file

    need(user, "rules.reload")
    if svc.rules is None or svc.settings.rules_file is None:
        raise Conflict("no rules file configured (CE_RULES_FILE)")
    try:
        rules = load_rules_file(svc.settings.rules_file)
    except RulesError as exc:
        raise ActionError(str(exc)) from None
    svc.rules.reload(rules)
    svc.auth.audit(user.username, "rules.reload", str(svc.settings.rules_file), {"rules": len(rules.rules)})
    return {"loaded": len(rules.rules)}


# --- device identities -------------------------------------------------------------------------------------


def new_claim(svc: CloudService, user: User, site_id: str, ttl_s: float, kind: str | None, note: str) -> dict[str, Any]:
    from cloud.provisioning.service import ClaimError

    need(user, "devices.provision")
    with _translated(invalid=(ClaimError,)):
        out = svc.provisioning.new_claim(site_id, user.username, ttl_s, kind, note)
    svc.auth.audit(user.username, "claim.create", site_id, {"kind": kind, "expires_ms": out["expires_ms"]})
    return out


def revoke_device(svc: CloudService, user: User, device_id: str) -> dict[str, Any]:
    need(user, "devices.provision")
    with _translated():
        out = svc.provisioning.revoke(device_id, user.username)
    svc.auth.audit(user.username, "device.revoke", device_id)
    svc.stream.publish([events.DeviceStatus(device_id, "revoked")])
    return out


def set_signing_key(svc: CloudService, user: User, device_id: str, key: str | None) -> dict[str, Any]:
    """Register the public half of a device's own key: from then on the cloud takes only what that key signed
    from it (readings aside). Staff who provision devices may give a key to a device that has none; replacing or
    forgetting one (which turns the check off, or locks the gateway out) is for admins. Audited, old and new."""
    from sqlalchemy import update

    from cloud.provisioning.service import signing_key_holder

    need(user, "devices.provision")
    with svc.engine.begin() as conn:
        row = conn.execute(
            select(t.devices.c.signing_key).where(t.devices.c.id == device_id, device_filter(user))
        ).first()
        if row is None:
            raise NotFound(f"no device {device_id!r}")
        old = row.signing_key
        if old == key:
            return {"device_id": device_id, "signing_key": key}
        if old is not None and not can(user, "devices.reinstate"):
            raise Forbidden(f"{device_id} has a key already: only an admin replaces or forgets one")
        if (holder := signing_key_holder(conn, key, device_id)) is not None:
            raise Conflict(f"this key is registered for {holder}: each gateway makes its own (civicedge edge keygen)")
        conn.execute(update(t.devices).where(t.devices.c.id == device_id).values(signing_key=key))
    svc.device_changed(device_id)
    svc.auth.audit(
        user.username,
        "device.signing_key",
        device_id,
        {"old": old[:12] if old else None, "new": key[:12] if key else None},
    )
    return {"device_id": device_id, "signing_key": key}


def reinstate_device(svc: CloudService, user: User, device_id: str) -> dict[str, Any]:
    """Only an admin undoes a revocation, and it is audited."""
    from cloud.provisioning.service import ClaimError

    need(user, "devices.reinstate")
    with _translated(conflict=(ClaimError,)):
        out = svc.provisioning.reinstate(device_id)
    svc.auth.audit(user.username, "device.reinstate", device_id)
    return out


def rotate_credentials(svc: CloudService, user: User, device_id: str) -> dict[str, Any]:
    from cloud.provisioning.service import ClaimError

    need(user, "devices.provision")
    with _translated(conflict=(ClaimError,)):
        out = svc.provisioning.rotate(device_id, svc.commands)
    svc.auth.audit(user.username, "device.rotate", device_id, {"cid": out["cid"]})
    return out


# --- updates ---------------------------------------------------------------------------------------------------


def add_bundle(svc: CloudService, user: User, data: bytes) -> dict[str, Any]:
    from cloud.updates.service import UpdateError

    need(user, "updates.manage")
    with _translated(invalid=(UpdateError,)):
        out = svc.updates.add_bundle(data, user.username)
    svc.auth.audit(user.username, "update.bundle", out["id"], {"sha256": out["sha256"]})
    return out


def create_rollout(svc: CloudService, user: User, bundle_id: str, **target: Any) -> dict[str, Any]:
    from cloud.updates.service import UpdateError

    need(user, "updates.manage")
    with _translated(invalid=(UpdateError,)):
        out = svc.updates.create_rollout(bundle_id, user.username, **target)
    svc.auth.audit(user.username, "rollout.create", out["id"], {"bundle": bundle_id, "devices": len(out["devices"])})
    return out


def abort_rollout(svc: CloudService, user: User, rollout_id: str) -> dict[str, Any]:
    from cloud.updates.service import UpdateError

    need(user, "updates.manage")
    with _translated(conflict=(UpdateError,)):
        out = svc.updates.abort(rollout_id, f"aborted by {user.username}")
    svc.auth.audit(user.username, "rollout.abort", rollout_id)
    return out
