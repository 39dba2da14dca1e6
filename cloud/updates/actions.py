"""Update bundles and rollouts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cloud.actions import need, translated
from cloud.auth.service import User

if TYPE_CHECKING:
    from cloud.service import CloudService


def add_bundle(svc: CloudService, user: User, data: bytes) -> dict[str, Any]:
    from cloud.updates.service import UpdateError

    need(user, "updates.manage")
    with translated(invalid=(UpdateError,)):
        out = svc.updates.add_bundle(data, user.username)
    svc.auth.audit(user.username, "update.bundle", out["id"], {"sha256": out["sha256"]})
    return out


def create_rollout(svc: CloudService, user: User, bundle_id: str, **target: Any) -> dict[str, Any]:
    from cloud.updates.service import UpdateError

    need(user, "updates.manage")
    with translated(invalid=(UpdateError,)):
        out = svc.updates.create_rollout(bundle_id, user.username, **target)
    svc.auth.audit(user.username, "rollout.create", out["id"], {"bundle": bundle_id, "devices": len(out["devices"])})
    return out


def abort_rollout(svc: CloudService, user: User, rollout_id: str) -> dict[str, Any]:
    from cloud.updates.service import UpdateError

    need(user, "updates.manage")
    with translated(conflict=(UpdateError,)):
        out = svc.updates.abort(rollout_id, f"aborted by {user.username}")
    svc.auth.audit(user.username, "rollout.abort", rollout_id)
    return out
