"""Parking-lift unit settings (cheap to import)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.drivers.config import ModbusRtu, ModbusTcp


class ParkingLiftConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["parking_lift"]
    tower: str = "tower-1"
    plc: Annotated[ModbusRtu | ModbusTcp, Field(discriminator="type")]
    unit_id: int = Field(1, ge=1, le=247)
    lifts: int = Field(2, ge=1, le=8)
    floors: int = Field(10, ge=1, le=60)
    bays: int = Field(6, ge=1, le=16, description="bays per floor per lift")
    policy: Literal["smart", "fifo"] = "smart"
    poll_s: float = Field(0.1, gt=0, le=5)
    timeout_s: float = Field(0.5, gt=0, le=10)
    watchdog_s: float = Field(2.0, gt=0, le=60, description="no answer from the PLC this long → safe stop, alarm")
    max_len_cm: int = 520
    max_height_cm: int = 205
    state: Path = Path("var/parking.db")
    clock_scale: float = Field(1.0, gt=0, description="tower seconds per wall second (simulators only)")
    store_patience_s: float = Field(180.0, gt=0, description="a store waiting this long goes before retrievals")
    telemetry_s: float = Field(60.0, gt=0, description="occupancy and queue readings this often")
