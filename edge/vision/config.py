"""Gate vision settings (pydantic only: parsed with the agent's config before any model loads)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from edge.thermal.config import ThermalConfig


class QualityConfig(BaseModel):
    min_face_px: float = Field(60, description="face box width in image pixels")
    max_yaw: float = Field(0.22, description="nose offset from the eye midpoint, in eye distances (≈ 25°)")
    pitch_range: tuple[float, float] = (0.3, 0.7)  # nose between eye line (0) and mouth (1)
    max_roll_deg: float = 40.0
    min_brightness: float = 40.0
    max_brightness: float = 225.0
    min_sharpness: float = 0.12


class VisionConfig(BaseModel):
    detector: Literal["short", "full"] = "short"
    threads: int = 2  # SFace: 2 threads take ~40 % off its time on a 2-core box
    detector_threads: int = 1  # BlazeFace is small: one thread, no pool to wake between frames
    quality: QualityConfig = QualityConfig()
    thermal: ThermalConfig | None = ThermalConfig()  # None: no thermal camera at this door
    liveness: bool = True
