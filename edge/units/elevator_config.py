"""Elevator monitor settings (cheap to import)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ElevatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["elevator"]
    car: str = "car-1"
    port: str = Field(description="the car board's serial device (RS-485 adapter)")
    baud: int = 115200
    floors: int = Field(10, ge=2, le=200)
    floor_height_m: float = Field(3.0, gt=1, le=10)
    lowest_floor: int = Field(0, ge=-10, le=10)
    rated_speed_ms: float = Field(1.0, gt=0, le=20)
    overspeed_ratio: float = Field(1.15, gt=1, le=2)
    overtravel_m: float = Field(0.3, gt=0, le=5)
    trapped_s: float = Field(60.0, gt=0, description="person inside, car stopped without a way out for this long")
    stop_outside_zone_s: float = Field(10.0, gt=0)
    reopen_limit: int = Field(5, ge=2, description="door re-openings at one stop that count as a fault")
    comm_timeout_s: float = Field(3.0, gt=0)
    status_every_s: float = Field(60.0, gt=0, description="running totals as readings this often")
