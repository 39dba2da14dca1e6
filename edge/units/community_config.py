"""Settings of the community sensor units — combustible gas, perimeter zones, high-altitude throwing camera,
water meters (pydantic only, cheap to import)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.drivers.config import CameraConfig, IOConfig, ModbusRtu, ModbusTcp

Id = Annotated[str, Field(min_length=1, max_length=48, pattern=r"^[a-z0-9][a-z0-9_-]*$")]  # part of metric names


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- combustible gas ---------------------------------------------------------------------------------------


class GasModbus(_M):
    """A commercial detector read over Modbus: concentration in an input register (``scale`` %LEL per count)
    and a status register whose bits report fault and end of life."""

    type: Literal["modbus"]
    plc: Annotated[ModbusRtu | ModbusTcp, Field(discriminator="type")]
    unit_id: int = Field(1, ge=1, le=247)
    concentration_register: int = Field(0, ge=0, le=65535)
    status_register: int = Field(1, ge=0, le=65535)
    scale: float = Field(0.1, gt=0, description="%LEL per register count")
    fault_bit: int = Field(0, ge=0, le=15)
    end_of_life_bit: int = Field(1, ge=0, le=15)
    timeout_s: float = Field(0.5, gt=0, le=10)


class GasContacts(_M):
    """A detector with relay contacts (low alarm, high alarm, fault) wired to inputs: no concentration."""

    type: Literal["contacts"]
    low: str = Field("gas_low", description="input closed at the detector's low level")
    high: str = Field("gas_high", description="input closed at the detector's high level")
    fault: str | None = Field("gas_fault", description="input closed on a detector fault")


class GasConfig(_M):
    type: Literal["gas"]
    detector: Id = Field(description="where it is, e.g. plant-room-b2")
    source: Annotated[GasModbus | GasContacts, Field(discriminator="type")]
    io: IOConfig | None = Field(None, description="the I/O holding the contacts and/or the valve and fan relays")
    low_lel: float = Field(10.0, gt=0, le=100)
    high_lel: float = Field(25.0, gt=0, le=100)
    hysteresis_lel: float = Field(2.0, ge=0, le=20, description="a level clears this far below its threshold")
    on_high: list[str] = Field(
        default_factory=list, description="outputs switched on at the high level, locally (gas valve, fan)"
    )
    latch: bool = Field(True, description="outputs stay on after the gas clears until the gas-reset command")
    poll_s: float = Field(1.0, gt=0, le=60)
    report_s: float = Field(60.0, gt=0, description="a concentration reading this often (at once on a change)")
    comm_timeout_s: float = Field(5.0, gt=0, description="detector silent this long: a fault")

    @model_validator(mode="after")
    def _check(self) -> GasConfig:
        if self.high_lel <= self.low_lel:
            raise ValueError("high_lel must be above low_lel")
        if (self.on_high or isinstance(self.source, GasContacts)) and self.io is None:
            raise ValueError("io is needed for on_high outputs and for a contacts detector")
        if self.io is not None:
            missing = [o for o in self.on_high if o not in self.io.outputs]
            if missing:
                raise ValueError(f"on_high names outputs the io does not have: {missing}")
            if isinstance(self.source, GasContacts):
                need = [n for n in (self.source.low, self.source.high, self.source.fault) if n]
                if absent := [n for n in need if n not in self.io.inputs]:
                    raise ValueError(f"the io has no inputs named {absent}")
        return self


# --- perimeter ---------------------------------------------------------------------------------------------

_WINDOW = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")


class Zone(_M):
    input: str = Field(description="the I/O input of the zone's detector (beam, vibration cable, fence contact)")
    kind: Literal["ir_beam", "vibration", "fence_contact"] = "ir_beam"
    tamper: str | None = Field(None, description="input the board sets when the line is cut (end-of-line status)")
    armed: Literal["always", "never", "schedule"] = "always"
    schedule: list[str] = Field(default_factory=list, description='armed windows, local time: ["22:00-06:30"]')
    debounce_s: float = Field(0.3, ge=0, le=30, description="the detector must stay tripped this long")
    snapshot: bool = Field(True, description="a still from the linked camera with the alarm, if one is set")

    @field_validator("schedule")
    @classmethod
    def _windows(cls, v: list[str]) -> list[str]:
        bad = [w for w in v if not _WINDOW.match(w)]
        if bad:
            raise ValueError(f"schedule windows must look like 22:00-06:30, got {bad}")
        return v


class PerimeterConfig(_M):
    type: Literal["perimeter"]
    site_area: Id = Field("perimeter", description="a name for the fence line")
    io: IOConfig
    zones: dict[Id, Zone] = Field(min_length=1)
    camera: CameraConfig | None = Field(None, description="a linked camera for snapshots")
    timezone: str = Field("UTC", description="for the arm schedules")
    retrigger_s: float = Field(60.0, gt=0, description="a zone re-alarms after this long tripped again")

    @model_validator(mode="after")
    def _check(self) -> PerimeterConfig:
        names = set(self.io.inputs)
        for zid, z in self.zones.items():
            for n in (z.input, z.tamper):
                if n and n not in names:
                    raise ValueError(f"zone {zid}: the io has no input named {n!r}")
            if z.armed == "schedule" and not z.schedule:
                raise ValueError(f"zone {zid}: armed: schedule needs schedule windows")
        return self


# --- high-altitude throwing --------------------------------------------------------------------------------


class ThrowingConfig(_M):
    type: Literal["throwing"]
    facade: Id = Field("facade", description="which building face the camera watches")
    camera: CameraConfig = Field(description="v4l2, rtsp or picamera (facade_sim: the simulators' facade)")
    fps: float = Field(15.0, gt=0, le=60)
    floors: int = Field(20, ge=1, le=200)
    floor_m: float = Field(3.0, gt=1, le=10)
    roof_y: float = Field(0.05, ge=0, lt=1, description="image height fraction where the top floor's top is")
    ground_y: float = Field(0.95, gt=0, le=1, description="image height fraction where the ground floor's base is")
    clip_frames: int = Field(8, ge=2, le=24, description="frames in the strip sent with the alarm")
    cooldown_s: float = Field(10.0, ge=0, description="one alarm per falling object, not one per frame")
    keep_dir: str | None = Field(None, description="keep each frame strip here on the gateway (evidence)")


# --- water meters ------------------------------------------------------------------------------------------


class MeterModbus(_M):
    """A meter with a Modbus interface: total volume (32-bit, litres) and flow (L/h, signed: reverse < 0)."""

    type: Literal["modbus"]
    plc: Annotated[ModbusRtu | ModbusTcp, Field(discriminator="type")]
    unit_id: int = Field(1, ge=1, le=247)
    volume_register: int = Field(0, ge=0, le=65534, description="two input registers, high word first, litres")
    flow_register: int = Field(2, ge=0, le=65535, description="signed L/h")
    timeout_s: float = Field(0.5, gt=0, le=10)


class MeterPulse(_M):
    """A meter with a reed/pulse output on an input: ``litres_per_pulse`` each closing."""

    type: Literal["pulse"]
    input: str
    litres_per_pulse: float = Field(10.0, gt=0)


class Meter(_M):
    household: Id = Field(description="the flat or house it serves, e.g. 12-0304")
    source: Annotated[MeterModbus | MeterPulse, Field(discriminator="type")]


class WaterConfig(_M):
    type: Literal["water"]
    meters: dict[Id, Meter] = Field(min_length=1)
    io: IOConfig | None = Field(None, description="for pulse meters")
    poll_s: float = Field(10.0, gt=0, le=3600)
    report_s: float = Field(3600.0, gt=0, description="consumption and flow readings this often (hourly)")
    clock_scale: float = Field(1.0, gt=0, description="simulation only: meter time runs this much faster")
    leak_lph: float = Field(6.0, gt=0, description="continuous flow: every minute of an hour above this")
    leak_hours: int = Field(3, ge=1, le=48, description="…for this many hours in a row is a leak")
    burst_lph: float = Field(1500.0, gt=0, description="a flow above this (pipe burst)")
    burst_s: float = Field(120.0, ge=0, description="…for this long (meter time)")
    reverse_lph: float = Field(5.0, gt=0, description="flow backwards beyond this (backflow)")
    silent_s: float = Field(900.0, gt=0, description="a meter not answering for this long (meter time)")

    @model_validator(mode="after")
    def _check(self) -> WaterConfig:
        if any(isinstance(m.source, MeterPulse) for m in self.meters.values()) and self.io is None:
            raise ValueError("pulse meters need io")
        return self
