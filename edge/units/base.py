"""What a unit sees of the agent, and the small interface every unit implements."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from edge.outbox import Outbox

CommandHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class UnitContext:
    """Handed to each unit: where to put messages and how to offer commands."""

    device: str
    outbox: Outbox
    register_command: Callable[[str, CommandHandler], None]


class Unit(abc.ABC):
    name: str = "unit"

    @abc.abstractmethod
    async def run(self, ctx: UnitContext) -> None:
        """Run until cancelled; decide locally and put every event/alarm/reading into the outbox."""
