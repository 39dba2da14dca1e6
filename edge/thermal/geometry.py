"""Pinhole camera geometry and the registration of RGB pixels onto the thermal frame.

The gate terminal carries an RGB camera and a thermal array side by side with parallel optical axes. A point at
distance ``d`` seen at RGB pixel ``u`` lands on thermal pixel ``cx_t + (f_t / f_rgb)·(u − cx_rgb) − f_t·b / d``
where ``b`` is the baseline (thermal camera position minus RGB camera position, metres). The distance comes from
the face itself (the interpupillary distance is close to 63 mm for adults), so parallax is corrected per face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

IPD_M = 0.063  # mean adult interpupillary distance


@dataclass(frozen=True, slots=True)
class CameraGeometry:
    width: int
    height: int
    hfov_deg: float

    @property
    def f(self) -> float:
        """Focal length in pixels (square pixels)."""
        return (self.width / 2) / math.tan(math.radians(self.hfov_deg) / 2)

    @property
    def centre(self) -> tuple[float, float]:
        return self.width / 2, self.height / 2

    def project(self, x: float, y: float, d: float) -> tuple[float, float]:
        """Pixel of a point at lateral (x, y) metres and depth d metres."""
        cx, cy = self.centre
        return cx + self.f * x / d, cy + self.f * y / d


class RegistrationConfig(BaseModel):
    """How the thermal array sits relative to the RGB camera (from the terminal's mechanical drawing)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rgb_width: int = 640
    rgb_height: int = 480
    rgb_hfov_deg: float = Field(60.0, gt=10, lt=170)
    thermal_width: int = 80
    thermal_height: int = 62
    thermal_hfov_deg: float = Field(60.0, gt=10, lt=170)
    baseline_x_m: float = 0.03  # thermal camera to the right of the RGB camera (seen from behind the terminal)
    baseline_y_m: float = 0.0


@dataclass(frozen=True, slots=True)
class Registration:
    rgb: CameraGeometry
    thermal: CameraGeometry
    baseline: tuple[float, float]

    @classmethod
    def from_config(cls, c: RegistrationConfig) -> Registration:
        return cls(
            CameraGeometry(c.rgb_width, c.rgb_height, c.rgb_hfov_deg),
            CameraGeometry(c.thermal_width, c.thermal_height, c.thermal_hfov_deg),
            (c.baseline_x_m, c.baseline_y_m),
        )

    def distance(self, eye_px: float) -> float:
        """Distance (m) of a face whose eyes are ``eye_px`` apart in the RGB image."""
        return self.rgb.f * IPD_M / max(eye_px, 1e-6)

    def to_thermal(self, u: float, v: float, d: float) -> tuple[float, float]:
        """Thermal pixel of RGB pixel (u, v) for a point at distance d (m)."""
        k = self.thermal.f / self.rgb.f
        (cx, cy), (tx, ty) = self.rgb.centre, self.thermal.centre
        return tx + k * (u - cx) - self.thermal.f * self.baseline[0] / d, ty + k * (
            v - cy
        ) - self.thermal.f * self.baseline[1] / d

    def scale(self) -> float:
        """Thermal pixels per RGB pixel."""
        return self.thermal.f / self.rgb.f
