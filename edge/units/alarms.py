"""Raise/clear bookkeeping shared by the community sensor units: each alarm key raised once while its condition
lasts and cleared once when it ends, whatever the polling rate."""

from __future__ import annotations

from typing import Any

from edge.outbox import Outbox
from protocol.messages import AlarmClear, AlarmRaise


class AlarmSet:
    def __init__(self, outbox: Outbox, prefix: str) -> None:
        self.outbox, self.prefix = outbox, prefix
        self.active: dict[str, str] = {}  # key → code

    async def set(
        self, what: str, on: bool, severity: str, message: str, clear_message: str = "", **details: Any
    ) -> bool:
        """Raise ``prefix.what`` when ``on`` and not yet active, clear it when not ``on`` and active; True
        when something changed."""
        key = f"{self.prefix}.{what}"
        code = what.rsplit(".", 1)[-1]
        if on and key not in self.active:
            self.active[key] = code
            await self.outbox.put(
                AlarmRaise(key=key, code=code, severity=severity, message=message, details=details)  # type: ignore[arg-type]
            )
            return True
        if not on and key in self.active:
            del self.active[key]
            await self.outbox.put(AlarmClear(key=key, code=code, message=clear_message))
            return True
        return False

    def is_active(self, what: str) -> bool:
        return f"{self.prefix}.{what}" in self.active
