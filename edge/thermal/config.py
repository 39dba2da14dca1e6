"""Thermal screening settings (pydantic only: parsed with the agent's config before any model loads)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge.thermal.geometry import RegistrationConfig


class ThermalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    fever_c: float = Field(37.3, ge=34.0, le=39.0, description="fever threshold, 34.0–39.0 °C in 0.1 steps")
    registration: RegistrationConfig = RegistrationConfig()
    blackbody_c: float | None = Field(38.0, description="reference set point; null when no blackbody is fitted")
    blackbody_px: int = Field(4, ge=1, description="the reference fills this many pixels square, bottom-right")
    ambient_sensor: bool = False  # True: the ambient comes from the terminal's air sensor, not the background
    frames: int = Field(4, ge=1, le=32)
    min_confidence: float = Field(0.5, ge=0, le=1)
    max_distance_m: float = 1.2
    threads: int = 1

    @field_validator("fever_c")
    @classmethod
    def _tenths(cls, v: float) -> float:
        if abs(v * 10 - round(v * 10)) > 1e-6:
            raise ValueError("fever threshold must be given in 0.1 °C steps (e.g. 37.3)")
        return round(v, 1)


class MLX90640Config(BaseModel):
    """A Melexis MLX90640 32×24 thermal array on the gateway's I²C bus (``edge/drivers/mlx90640.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["mlx90640"]
    bus: int = Field(1, ge=0, le=31, description="/dev/i2c-N (1 on a Raspberry Pi's header)")
    address: int = Field(0x33, ge=0x08, le=0x77)
    refresh_hz: float = Field(
        8.0,
        description="subpage rate: 0.5, 1, 2, 4, 8, 16, 32 or 64 Hz; a full frame takes two subpages "
        "(8 Hz needs the I²C bus at 400 kHz or more)",
    )
    emissivity: float = Field(
        1.0,
        gt=0.5,
        le=1.0,
        description="1.0 reports apparent temperatures, which the calibration model was trained on; "
        "change it only with a recalibrated model",
    )
    ta_shift_c: float = Field(8.0, ge=0, le=20, description="the sensor runs this much above the air (open air: 8)")
    flip: bool = Field(False, description="mirror left-right, to match the RGB camera's view")

    @field_validator("refresh_hz")
    @classmethod
    def _rate(cls, v: float) -> float:
        if v not in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0):
            raise ValueError("the MLX90640 refreshes at 0.5, 1, 2, 4, 8, 16, 32 or 64 Hz")
        return float(v)
