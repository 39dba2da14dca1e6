"""Driver settings (pydantic only, cheap to import: the agent parses them before any driver loads)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    outputs: dict[str, int] = Field(default_factory=dict, description="name → pin / channel / coil")
    inputs: dict[str, int] = Field(default_factory=dict, description="name → pin / channel / discrete input")
    invert: list[str] = Field(default_factory=list, description="inputs that are active when the line is low")


class GpioConfig(_Cfg):
    type: Literal["gpio"]
    pull_up: bool = True


class IOBoardConfig(_Cfg):
    type: Literal["ioboard"]
    port: str
    baud: int = 115200
    timeout_s: float = Field(0.5, gt=0, le=10)
    watchdog_s: float | None = Field(5.0, gt=0, le=60, description="board drops outputs if not kicked")


class ModbusRtu(BaseModel):
    """How to reach a Modbus RTU device (a serial port or RS-485 adapter)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["rtu"]
    port: str
    baud: int = 115200


class ModbusTcp(BaseModel):
    """How to reach a Modbus TCP device (or an RTU-over-TCP gateway)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["tcp"]
    host: str
    port: int = Field(502, ge=1, le=65535)


class ModbusConfig(_Cfg):
    type: Literal["modbus"]
    port: str
    baud: int = 9600
    unit_id: int = Field(1, ge=1, le=247)
    timeout_s: float = Field(0.5, gt=0, le=10)


IOConfig = Annotated[GpioConfig | IOBoardConfig | ModbusConfig, Field(discriminator="type")]


class OpenCVCameraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["opencv"]
    device: int | str = 0
    width: int = 640
    height: int = 480


class SimulatedCameraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["simulated"]
    fps: float = Field(10.0, gt=0, le=60)
    seed: int = 0


CameraConfig = Annotated[OpenCVCameraConfig | SimulatedCameraConfig, Field(discriminator="type")]


class SerialAnprConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["serial"]
    port: str
    baud: int = 9600


class TcpAnprConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["tcp"]
    host: str
    port: int = Field(ge=1, le=65535)


AnprConfig = Annotated[SerialAnprConfig | TcpAnprConfig, Field(discriminator="type")]
