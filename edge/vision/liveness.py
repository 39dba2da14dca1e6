"""Liveness: is a living person in front of the terminal, or a printed photo or a phone screen?

Thermal cues decide (a picture has no body heat):
* **heat** — the face must stand out from the ambient by a good part of what skin would (skin sits at about
  80 % of the way from ambient to body temperature; a paper photo sits at ambient);
* **profile** — the inner canthus must be warmer than the rest of the face, in proportion to the face's
  contrast (skin is unevenly perfused; a phone screen is uniformly warm).
Near body-temperature ambient (above ≈ 33 °C) the thermal cues vanish and the result says so.
RGB cues:
* **colour** — a face in colour (a greyscale print or a monochrome display fails it);
* **motion** — depth parallax across frames (``edge.vision.motion``): a picture moves as a plane, a head does
  not. It needs a few frames: until the face has shown depth the result is *pending*; a face that moved a
  fair way and stayed flat is a picture.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from edge.thermal.screen import Features
from edge.vision.config import LivenessConfig
from edge.vision.motion import Motion

SKIN_SHARE = 0.8  # cheeks/forehead sit ≈ 80 % of the way from ambient to body temperature
BODY_C = 36.5
THRESHOLD = 0.5
NOISE_LIFT = 0.15  # the hottest of a few noisy pixels reads this much above a uniform surface
MIN_CONTRAST = 2.5  # below this (ambient above ≈ 33 °C) the thermal cues cannot separate skin from a picture
LONG_PENDING = 3  # × spoof_after_s: a face that never showed depth this long is reported (not latched)
FLAT_MOTION = "flat motion (a picture or a screen)"
MIN_MOTION = 0.4  # eye distances: a picture moved at least this far and never showed depth → flat


@dataclass(frozen=True, slots=True)
class Liveness:
    score: float  # 0 (certainly a picture) … 1 (certainly live)
    live: bool
    reason: str
    cues: dict[str, float]
    pending: bool = False  # the motion cue has not seen enough yet: neither live nor a picture

    @property
    def flat_motion(self) -> bool:
        """The motion cue judged this face a picture (the track keeps that verdict until the face leaves)."""
        return not self.live and self.reason == FLAT_MOTION


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def assess(
    features: Features | None,
    crop_rgb: npt.NDArray[np.uint8] | None = None,
    motion: Motion | None = None,
    config: LivenessConfig | None = None,
    thermal: bool = True,
) -> Liveness:
    """Cues from the thermal features (``thermal``: the door has a thermal camera), the aligned face crop
    (colour) and the motion tracker; the score is the weakest cue's."""
    cfg = config or LivenessConfig()
    cues: dict[str, float] = {}
    reasons: list[tuple[float, str]] = []
    pending = False
    if motion is not None:
        cues["parallax"], cues["motion"] = motion.parallax, motion.motion
        flat = FLAT_MOTION
        if motion.flat:  # judged a picture earlier in this track: depth shown later does not undo it
            reasons.append((0.0, flat))
        elif motion.parallax >= cfg.min_parallax or (motion.age_s >= cfg.spoof_after_s and motion.motion >= MIN_MOTION):
            # depth seen (a live score), or a face that moved a fair way and stayed flat (a picture's)
            reasons.append((_clip01(0.5 * motion.parallax / cfg.min_parallax), flat))
        elif motion.age_s >= LONG_PENDING * cfg.spoof_after_s:
            long_s = LONG_PENDING * cfg.spoof_after_s
            reasons.append((0.0, f"no depth shown in {long_s:.0f} s (a picture held still?)"))
        else:
            pending = True
    if not thermal:
        pass
    elif features is not None:
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
    if not reasons:
        return Liveness(0.0, False, "no depth seen yet", cues, pending=True)
    score, reason = min(reasons, key=lambda r: r[0])
    if pending and score >= THRESHOLD:
        return Liveness(round(score, 3), False, "no depth seen yet", cues, pending=True)
    live = score >= THRESHOLD
    return Liveness(round(score, 3), live, "live" if live and score >= 1.0 else reason, cues)
