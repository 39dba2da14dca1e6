"""Sending a signed command to a device."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cloud.actions import ActionError, NotFound, Unavailable, need
from cloud.auth.scope import can_see_device
from cloud.auth.service import User
from cloud.commands import CommandUnknownDevice

if TYPE_CHECKING:
    from cloud.service import CloudService


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
    out = command(svc, device_id, name, args, ttl_s or svc.settings.command_ttl_s)
    svc.auth.audit(user.username, "command.send", device_id, {"name": name})
    return out


def command(svc: CloudService, device_id: str, name: str, args: dict[str, Any], ttl_s: float) -> dict[str, Any]:
    """A signed command to a device, with the broker's and the registry's refusals as typed errors."""
    if svc.commands is None:
        raise Unavailable("command publisher not running (no broker configured)")
    try:
        return svc.commands.send(device_id, name, args, ttl_s)
    except CommandUnknownDevice:
        raise NotFound(f"no device {device_id!r}") from None
    except ConnectionError as exc:
        raise Unavailable(f"broker unavailable: {exc}; try again shortly") from None
