"""What a unit sees of the agent, and the small interface every unit implements."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from edge.commands import CommandHandler
from edge.outbox import Outbox
from edge.trust import Trust
from protocol.topics import Channel, Topic

ChannelHandler = Callable[[Topic, bytes], Awaitable[None]]


def _always() -> bool:
    return True


def _ignore(_channel: Channel, _handler: ChannelHandler) -> None:
    return None


def _no_hook(_hook: Callable[[], Awaitable[None]]) -> None:
    return None


@dataclass(frozen=True, slots=True)
class UnitContext:
    """Handed to each unit: where to put messages, how to offer commands, and what it may know of the link."""

    device: str
    outbox: Outbox
    register_command: Callable[[str, CommandHandler], None]
    online: Callable[[], bool] = _always  # is the cloud reachable right now (the broker connected)?
    subscribe: Callable[[Channel, ChannelHandler], None] = _ignore  # cloud → device messages (gallery, …)
    on_connect: Callable[[Callable[[], Awaitable[None]]], None] = _no_hook  # run after every (re)connect
    trust: Trust = field(default_factory=Trust.refusing)  # pinned keys: which cloud documents to apply


class Unit(abc.ABC):
    name: str = "unit"

    @abc.abstractmethod
    async def run(self, ctx: UnitContext) -> None:
        """Run until cancelled; decide locally and put every event/alarm/reading into the outbox."""

    def status(self) -> dict[str, Any]:
        """What the gateway's status page shows of this unit (edge.status): plain values, no personal data;
        ``decisions``, if present, a list of recent decisions."""
        return {}
