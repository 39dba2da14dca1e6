"""Thermal screening settings (pydantic only: parsed with the agent's config before any model loads)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from edge.thermal.geometry import RegistrationConfig


class ThermalConfig(BaseModel):
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
