"""Liveness: is a living person in front of the terminal, or a printed photo or a phone screen?

Thermal cues decide (a picture has no body heat):
* **heat** — the face must stand out from the ambient by a good part of what skin would (skin sits at about
  80 % of the way from ambient to body temperature; a paper photo sits at ambient);
* **profile** — the inner canthus must be warmer than the rest of the face, in proportion to the face's
  contrast (skin is unevenly perfused; a phone screen is uniformly warm).
Near body-temperature ambient (above ≈ 33 °C) the thermal cues vanish and the result says so.
RGB cue: a face in colour (a greyscale print or a monochrome display fails it).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from edge.thermal.screen import Features

SKIN_SHARE = 0.8  # cheeks/forehead sit ≈ 80 % of the way from ambient to body temperature
BODY_C = 36.5
THRESHOLD = 0.5
NOISE_LIFT = 0.15  # the hottest of a few noisy pixels reads this much above a uniform surface
MIN_CONTRAST = 2.5  # below this (ambient above ≈ 33 °C) the thermal cues cannot separate skin from a picture


@dataclass(frozen=True, slots=True)
class Liveness:
    score: float  # 0 (certainly a picture) … 1 (certainly live)
    live: bool
    reason: str
    cues: dict[str, float]


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def assess(features: Features | None, crop_rgb: npt.NDArray[np.uint8] | None = None) -> Liveness:
    cues: dict[str, float] = {}
    reasons: list[tuple[float, str]] = []
    if features is not None:
        expected = SKIN_SHARE * (BODY_C - features.t_amb)
        if expected >= MIN_CONTRAST:
            heat = (features.t_face - features.t_amb) / expected
            lift = features.t_hot - features.t_face - NOISE_LIFT
            profile = lift / max(features.t_hot - features.t_amb, 0.5)
            cues["heat"] = round(heat, 3)
            cues["profile"] = round(profile, 3)
            reasons.append((_clip01((heat - 0.3) / 0.4), "no body heat (a photo or a print)"))
            reasons.append((_clip01((profile - 0.03) / 0.04), "flat heat profile (a screen)"))
        else:
            reasons.append((0.6, "thermal cues inconclusive: ambient close to body temperature"))
    else:
        reasons.append((0.6, "no thermal reading"))
    if crop_rgb is not None:
        sat = float(cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2HSV)[..., 1].mean()) / 255.0
        cues["saturation"] = round(sat, 3)
        reasons.append((_clip01(sat / 0.06), "no colour (a greyscale print or display)"))
    score, reason = min(reasons, key=lambda r: r[0])
    live = score >= THRESHOLD
    return Liveness(round(score, 3), live, "live" if live and score >= 1.0 else reason, cues)
