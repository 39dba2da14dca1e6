"""What a unit under test has committed to its outbox, read as the uplink reads it."""

from __future__ import annotations

from typing import Any

import orjson

from edge.outbox import Outbox
from protocol.messages import Lane


class Sent:
    """Reads on from where the last call stopped, as the uplink does: the outbox seals new telemetry readings
    into a batch only after what has been fetched, so reading from the start every time would never see readings
    committed after the first batch was sealed."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._after: dict[Lane, int] = {}
        self._seen: list[dict[str, Any]] = []

    async def __call__(self, type_: str | None = None) -> list[dict[str, Any]]:
        """Every message committed so far (of ``type_``), each lane in order."""
        for m in await self.outbox.fetch(100_000, self._after):
            self._after[m.lane] = m.row
            self._seen.append(orjson.loads(m.payload))
        return [b for b in self._seen if type_ is None or b["type"] == type_]
