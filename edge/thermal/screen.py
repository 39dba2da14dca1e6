"""Thermal screening: register the face onto the thermal frames, measure, calibrate, decide pass / fever / retry.

Measurement on a short burst of frames (≈ 0.5 s): each frame is corrected for sensor drift with the blackbody
reference (when fitted), the frames are averaged per pixel (noise ÷ √n), and the hottest pixel in the region
around the eyes — the inner canthus — is the core-temperature proxy. With the median of the central face, the
ambient (background away from the person, or an ambient sensor) and the distance (from the eye spacing in the
RGB image), a small calibration model (``models/thermal_calibration.tflite``) turns the readings into a body
temperature. Low confidence (too far, face not in the thermal view, unstable, no background) means "retry",
never a guess.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from edge.inference import Model
from edge.thermal.config import ThermalConfig
from edge.thermal.frame import F32, ThermalFrame, stack
from edge.thermal.geometry import Registration

MODELS_DIR = Path(__file__).resolve().parent / "models"
CALIBRATION_MODEL = MODELS_DIR / "thermal_calibration.tflite"
FEATURES = ("t_hot", "t_face", "t_amb", "distance_m")
__all__ = ["CALIBRATION_MODEL", "FEATURES", "Features", "Reading", "Retry", "ThermalConfig", "ThermalScreen", "extract"]

Box = tuple[float, float, float, float]
Points = tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class Features:
    t_hot: float  # hottest stable pixel near the eyes (°C, drift-corrected)
    t_face: float  # median of the central face
    t_amb: float  # ambient
    distance_m: float
    drift_c: float  # offset removed using the blackbody (0 without one)
    hot_std_c: float  # spread of the hot spot across frames
    eye_px_thermal: float  # eye spacing on the thermal array (resolution on the face)

    def vector(self) -> F32:
        return np.array([[self.t_hot, self.t_face, self.t_amb, self.distance_m]], dtype=np.float32)


class Retry(Exception):
    """The frames cannot give a reading; the reason is for the person at the gate."""


def _region(frame_shape: tuple[int, int], cx: float, cy: float, hw: float, hh: float) -> tuple[slice, slice] | None:
    rows, cols = frame_shape
    r0, r1 = math.floor(cy - hh), math.ceil(cy + hh)
    c0, c1 = math.floor(cx - hw), math.ceil(cx + hw)
    if r1 <= 0 or c1 <= 0 or r0 >= rows or c0 >= cols:
        return None
    return slice(max(r0, 0), min(r1, rows)), slice(max(c0, 0), min(c1, cols))


def extract(
    frames: F32,
    box: Box,
    keypoints: Points,
    reg: Registration,
    blackbody_c: float | None = None,
    blackbody_px: int = 4,
    ambient_c: float | None = None,
) -> Features:
    """Readings from a burst of frames (n, rows, cols) for a face found in the RGB image."""
    _n, rows, cols = frames.shape
    drift = 0.0
    if blackbody_c is not None:
        per_frame = np.median(frames[:, -blackbody_px:, -blackbody_px:], axis=(1, 2)) - blackbody_c
        frames = frames - per_frame[:, None, None].astype(np.float32)
        drift = float(per_frame.mean())
    (rx, ry), (lx, ly) = keypoints[0], keypoints[1]
    eye_px = math.hypot(lx - rx, ly - ry)
    if eye_px < 2:
        raise Retry("please look at the camera")
    d = reg.distance(eye_px)
    (tx0, ty0), (tx1, ty1) = reg.to_thermal(rx, ry, d), reg.to_thermal(lx, ly, d)
    ed = eye_px * reg.scale()
    eyes = _region((rows, cols), (tx0 + tx1) / 2, (ty0 + ty1) / 2, max(0.9 * ed, 1.0), max(0.6 * ed, 1.0))
    if eyes is None:
        raise Retry("please stand in front of the screen")
    mean = frames.mean(axis=0)
    if blackbody_c is not None:  # the reference patch is never part of the face
        mean = mean.copy()
        mean[-blackbody_px:, -blackbody_px:] = -273.0
    patch = mean[eyes]
    if patch.size == 0 or patch.max() < -200:
        raise Retry("please stand in front of the screen")
    r, c = np.unravel_index(int(np.argmax(patch)), patch.shape)
    hot_series = frames[:, eyes[0].start + r, eyes[1].start + c]
    x0, y0, x1, y1 = box
    fcx, fcy = (x0 + x1) / 2, (y0 + y1) / 2
    tfx, tfy = reg.to_thermal(fcx, fcy, d)
    fw, fh = (x1 - x0) * reg.scale(), (y1 - y0) * reg.scale()
    central = _region((rows, cols), tfx, tfy, max(0.3 * fw, 0.5), max(0.3 * fh, 0.5))
    if central is None:
        raise Retry("please stand in front of the screen")
    t_face = float(np.median(mean[central]))
    if ambient_c is None:  # background: beside the person's shoulders or above the head
        col, row = np.arange(cols)[None, :], np.arange(rows)[:, None]
        away = (np.abs(col - tfx) > 1.8 * fw) | (row < tfy - 0.8 * fh)
        bg = mean[away]
        bg = bg[bg > -200]
        if bg.size < 8:
            raise Retry("please step back a little")
        ambient_c = float(np.median(bg))
    return Features(
        t_hot=float(patch[r, c]),
        t_face=t_face,
        t_amb=float(ambient_c),
        distance_m=d,
        drift_c=drift,
        hot_std_c=float(hot_series.std()),
        eye_px_thermal=ed,
    )


Verdict = Literal["pass", "fever", "retry"]


@dataclass(frozen=True, slots=True)
class Reading:
    verdict: Verdict
    temperature_c: float | None
    confidence: float
    reason: str
    features: Features | None

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["features"] = asdict(self.features) if self.features else None
        return d


class ThermalScreen:
    """Body temperature from thermal frames and a face; thread-safe (the model runs one call at a time)."""

    def __init__(self, config: ThermalConfig | None = None) -> None:
        self.config = config or ThermalConfig()
        self.registration = Registration.from_config(self.config.registration)
        self.model = Model(CALIBRATION_MODEL, self.config.threads)

    def estimate(self, f: Features) -> float:
        return float(self.model.run(f.vector())[0].reshape(-1)[0])

    def confidence(self, f: Features) -> tuple[float, str]:
        c, why = 1.0, "ok"
        if f.distance_m > 0.9:
            c *= max(0.0, 1.0 - (f.distance_m - 0.9) / max(self.config.max_distance_m - 0.9, 1e-6) * 0.6)
            why = "please step closer"
        if f.eye_px_thermal < 2.5:
            c *= f.eye_px_thermal / 2.5
            why = "please step closer"
        if f.hot_std_c > 0.25:
            c *= max(0.0, 1.0 - (f.hot_std_c - 0.25) / 0.5)
            why = "please hold still"
        if self.config.blackbody_c is None:
            c *= 0.9
        return c, why

    PLAUSIBLE = (34.0, 43.0)  # outside this the reading is not a person's body temperature

    def screen(
        self, frames: list[ThermalFrame], box: Box, keypoints: Points, ambient_c: float | None = None
    ) -> Reading:
        cfg = self.config
        try:
            f = extract(
                stack(frames),
                box,
                keypoints,
                self.registration,
                cfg.blackbody_c,
                cfg.blackbody_px,
                ambient_c if cfg.ambient_sensor else None,
            )
        except Retry as exc:
            return Reading("retry", None, 0.0, str(exc), None)
        conf, why = self.confidence(f)
        temp = round(self.estimate(f), 2)
        if conf < cfg.min_confidence:
            return Reading("retry", temp, round(conf, 3), why, f)
        if not self.PLAUSIBLE[0] <= temp <= self.PLAUSIBLE[1]:
            return Reading("retry", temp, round(conf, 3), "no body temperature reading", f)
        verdict: Verdict = "fever" if temp >= cfg.fever_c else "pass"
        return Reading(verdict, temp, round(conf, 3), "ok", f)
