"""Signed command intake: verify, refuse replays, dispatch to a handler, acknowledge through the outbox.

Order of checks: decode (schema, topic, device) → signature by the pinned command key → deadline → replay. The
command id is recorded in SQLite *before* the handler runs (at most once). Ids are forgotten by the clock-free
floor of ``edge.trust`` (the highest accepted deadline minus the longest lifetime) and by count, never by the
device's own clock, and a command under the floor is refused: a gateway whose clock went back after a reboot
cannot be made to run an old command again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from edge.outbox import Outbox
from edge.trust import Trust
from protocol.codec import decode
from protocol.errors import ProtocolError, Reason
from protocol.messages import Command, CommandAck
from protocol.signing import verify_command
from protocol.topics import Topic

#: what a unit registers for a command name: the command's arguments in, the result (or None) out
CommandHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]

log = logging.getLogger("civicedge.edge.commands")


class CommandError(Exception):
    """Raised by a handler to answer with status ``error`` and this message as the reason."""


class CommandProcessor:
    def __init__(self, device: str, outbox: Outbox, trust: Trust) -> None:
        self.device = device
        self.outbox = outbox
        self.trust = trust
        self.handlers: dict[str, CommandHandler] = {}
        self.counters: dict[str, int] = {}

    def register(self, name: str, handler: CommandHandler) -> None:
        if name in self.handlers:
            raise ValueError(f"command {name!r} already has a handler")
        self.handlers[name] = handler

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    async def _ack(self, cmd: Command, status: str, reason: str | None = None, result: Any = None) -> None:
        await self.outbox.put(CommandAck(cid=cmd.cid, name=cmd.name, status=status, reason=reason, result=result))  # type: ignore[arg-type]

    async def handle(self, topic: Topic, payload: bytes) -> str:
        """Process one message from ``cmd/{name}``; return the outcome (ok, error, refused:<reason>, …)."""
        try:
            env = decode(payload, topic)
        except ProtocolError as exc:
            self._count(f"rejected_{exc.reason.value}")
            log.warning("command rejected", extra={"reason": exc.reason.value, "detail": exc.detail})
            return f"rejected:{exc.reason.value}"
        cmd = env.body
        if not isinstance(cmd, Command):
            self._count("rejected_wrong_channel")
            return "rejected:wrong_channel"
        key = self.trust.key("commands")
        if key is None:
            return await self._refuse(cmd, Reason.BAD_SIGNATURE, "no command key pinned on this device")
        try:
            verify_command(key, cmd, device=self.device, now=self.trust.now_ms())
            await self.trust.remember(cmd.cid, cmd.name, cmd.deadline_ms, cmd.issued_ms)
        except ProtocolError as exc:
            return await self._refuse(cmd, exc.reason, exc.detail)
        handler = self.handlers.get(cmd.name)
        if handler is None:
            self._count("unknown_command")
            await self._ack(cmd, "error", f"unknown_command: {cmd.name!r} (known: {', '.join(sorted(self.handlers))})")
            return "error:unknown_command"
        try:
            result = await handler(dict(cmd.args))
        except CommandError as exc:
            self._count("error")
            await self._ack(cmd, "error", str(exc)[:1000])
            return "error"
        except OSError as exc:  # a full or read-only card: say which file and why, not a traceback
            log.warning("command could not write", extra={"command": cmd.name, "error": str(exc)})
            self._count("error")
            await self._ack(cmd, "error", f"cannot write {exc.filename or 'a file'}: {exc.strerror or exc}"[:1000])
            return "error"
        except Exception as exc:  # a handler bug must not take the agent down
            log.exception("command handler failed", extra={"command": cmd.name})
            self._count("error")
            await self._ack(cmd, "error", f"{type(exc).__name__}: {exc}"[:1000])
            return "error"
        self._count("ok")
        await self._ack(cmd, "ok", result=result)
        return "ok"

    async def _refuse(self, cmd: Command, reason: Reason, detail: str) -> str:
        self._count(f"refused_{reason.value}")
        log.warning("command refused", extra={"cid": cmd.cid, "reason": reason.value})
        await self._ack(cmd, "refused", f"{reason.value}: {detail}")
        return f"refused:{reason.value}"
