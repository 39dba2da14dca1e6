"""Device identities: claim tokens, revocation, signing keys, credentials."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from cloud import events
from cloud.actions import Conflict, Forbidden, NotFound, need, translated
from cloud.auth.scope import can, device_filter
from cloud.auth.service import User
from cloud.db import schema as t

if TYPE_CHECKING:
    from cloud.service import CloudService


def new_claim(svc: CloudService, user: User, site_id: str, ttl_s: float, kind: str | None, note: str) -> dict[str, Any]:
    from cloud.provisioning.service import ClaimError

    need(user, "devices.provision")
    with translated(invalid=(ClaimError,)):
        out = svc.provisioning.new_claim(site_id, user.username, ttl_s, kind, note)
    svc.auth.audit(user.username, "claim.create", site_id, {"kind": kind, "expires_ms": out["expires_ms"]})
    return out


def revoke_device(svc: CloudService, user: User, device_id: str) -> dict[str, Any]:
    need(user, "devices.provision")
    with translated():
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
    with translated(conflict=(ClaimError,)):
        out = svc.provisioning.reinstate(device_id)
    svc.auth.audit(user.username, "device.reinstate", device_id)
    return out


def rotate_credentials(svc: CloudService, user: User, device_id: str) -> dict[str, Any]:
    from cloud.provisioning.service import ClaimError

    need(user, "devices.provision")
    with translated(conflict=(ClaimError,)):
        out = svc.provisioning.rotate(device_id, svc.commands)
    svc.auth.audit(user.username, "device.rotate", device_id, {"cid": out["cid"]})
    return out
