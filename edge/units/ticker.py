"""A diagnostic unit that emits a steady stream of numbered events (``event``/``tick``) and readings.

Used by the chaos scenarios and benchmarks, and on a real gateway as a link test pattern.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.units.base import Unit, UnitContext
from protocol.messages import DeviceEvent


class TickerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["ticker"]
    rate_per_s: float = Field(default=10.0, gt=0, le=100_000, description="events per second")
    burst: int = Field(default=1, ge=1, le=10_000, description="events put concurrently per tick")
    readings: bool = Field(default=False, description="also put one telemetry reading per event")
    limit: int | None = Field(default=None, ge=1, description="stop after this many events")


class Ticker(Unit):
    name = "ticker"

    def __init__(self, config: TickerConfig) -> None:
        self.config = config
        self.sent = 0

    async def run(self, ctx: UnitContext) -> None:
        cfg = self.config
        period = cfg.burst / cfg.rate_per_s
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while cfg.limit is None or self.sent < cfg.limit:
            n = cfg.burst if cfg.limit is None else min(cfg.burst, cfg.limit - self.sent)
            puts = [ctx.outbox.put(DeviceEvent(code="tick")) for _ in range(n)]
            if cfg.readings:
                puts += [ctx.outbox.put_reading("tick", float(self.sent + i)) for i in range(n)]
            await asyncio.gather(*puts)
            self.sent += n
            next_t += period
            delay = next_t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_t = loop.time()
