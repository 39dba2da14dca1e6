"""Quality gates: is this face good enough to decide on? If not, the person is asked to fix it — never rejected.

Checks run on the detection and the aligned 112×112 crop, cheapest first: size (box width in pixels), pose
(yaw from the nose's offset off the eye midpoint, pitch from where the nose sits between eyes and mouth, roll
from the eye line; all in the face's own frame), exposure (mean luminance of the central crop), sharpness
(variance of the Laplacian of the contrast-normalised crop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from edge.vision.config import QualityConfig
from edge.vision.detect import Face

Issue = Literal["ok", "too_small", "off_axis", "too_dark", "too_bright", "blurred"]
PROMPTS: dict[Issue, str] = {
    "ok": "",
    "too_small": "please step closer",
    "off_axis": "please look at the camera",
    "too_dark": "please look at the camera",
    "too_bright": "please look at the camera",
    "blurred": "please hold still",
}


@dataclass(frozen=True, slots=True)
class Quality:
    issue: Issue
    metrics: dict[str, float]

    @property
    def ok(self) -> bool:
        return self.issue == "ok"

    @property
    def prompt(self) -> str:
        return PROMPTS[self.issue]


def pose(face: Face) -> tuple[float, float, float]:
    """(yaw index, pitch index, roll degrees) from the first four keypoints."""
    (rx, ry), (lx, ly), (nx, ny), (mx, my) = face.keypoints[:4]
    roll = math.atan2(ly - ry, lx - rx)
    c, s = math.cos(-roll), math.sin(-roll)

    def rot(x: float, y: float) -> tuple[float, float]:
        return x * c - y * s, x * s + y * c

    e0, e1, n, m = rot(rx, ry), rot(lx, ly), rot(nx, ny), rot(mx, my)
    mid = ((e0[0] + e1[0]) / 2, (e0[1] + e1[1]) / 2)
    ed = max(math.hypot(lx - rx, ly - ry), 1e-6)
    yaw = (n[0] - mid[0]) / ed
    pitch = (n[1] - mid[1]) / max(m[1] - mid[1], 1e-6)
    return yaw, pitch, math.degrees(roll)


def sharpness(gray: npt.NDArray[np.uint8]) -> float:
    g = gray.astype(np.float32)
    g = (g - g.mean()) / max(float(g.std()), 1.0)
    return float(cv2.Laplacian(g, cv2.CV_32F).var())


def assess(face: Face, crop_rgb: npt.NDArray[np.uint8], cfg: QualityConfig | None = None) -> Quality:
    cfg = cfg or QualityConfig()
    yaw, pitch, roll = pose(face)
    gray = cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2GRAY)
    centre = np.asarray(gray[20:92, 20:92], dtype=np.uint8)
    m = {
        "face_px": round(face.width, 1),
        "yaw": round(yaw, 3),
        "pitch": round(pitch, 3),
        "roll_deg": round(roll, 1),
        "brightness": round(float(centre.mean()), 1),
        "sharpness": round(sharpness(centre), 3),
    }
    issue: Issue = "ok"
    if m["face_px"] < cfg.min_face_px:
        issue = "too_small"
    elif (
        abs(yaw) > cfg.max_yaw or not cfg.pitch_range[0] <= pitch <= cfg.pitch_range[1] or abs(roll) > cfg.max_roll_deg
    ):
        issue = "off_axis"
    elif m["brightness"] < cfg.min_brightness:
        issue = "too_dark"
    elif m["brightness"] > cfg.max_brightness:
        issue = "too_bright"
    elif m["sharpness"] < cfg.min_sharpness:
        issue = "blurred"
    return Quality(issue, m)
