"""Barrier unit settings (cheap to import)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.drivers.config import AnprConfig, IOConfig


class BarrierConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["barrier"]
    lane: str = "lane-1"
    io: IOConfig
    anpr: AnprConfig
    hold_open: str = Field("barrier", description="output: energised = barrier up and held (controller input)")
    loop: str | None = Field("loop", description="input: active = a vehicle over the safety loop")
    open_s: float = Field(15.0, gt=0, le=600, description="close after this if no vehicle arrives")
    clear_s: float = Field(1.0, ge=0, le=30, description="close this long after the vehicle left the loop")
    min_confidence: float = Field(0.8, ge=0, le=1)
    allowlist: Path = Path("var/allowlist.db")
    sync_check_s: float = Field(300.0, ge=1, le=86_400, description="report the allow-list revision this often")
