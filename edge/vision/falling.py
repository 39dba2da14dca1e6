"""Falling-object detection for a camera looking up a building face, with classic vision only: a background
model (OpenCV MOG2) finds what moves, a small morphological opening drops thin streaks (rain), connected
components become blobs, blobs are linked into tracks by predicted position, and a track counts as a thrown
or dropped object only when its path is consistent with free fall — moving down, accelerating downwards at
roughly g (given the camera's calibration in pixels per metre), and not drifting sideways like a bird. The
apex of the fitted parabola gives the floor band it came from.

Birds (level flight, no downward acceleration), rain (steady fall speed, thin), a swaying branch (back and
forth, stays put) and window lights switching (a step, no motion) fail those tests.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
G = 9.81


@dataclass(frozen=True)
class Calibration:
    height_px: int
    floors: int
    roof_y: float = 0.05
    ground_y: float = 0.95
    floor_m: float = 3.0

    @property
    def px_per_floor(self) -> float:
        return (self.ground_y - self.roof_y) * self.height_px / self.floors

    @property
    def g_px(self) -> float:
        return G * self.px_per_floor / self.floor_m

    def floor_at(self, y: float) -> float:
        return self.floors - (y - self.roof_y * self.height_px) / self.px_per_floor + 1


@dataclass
class Track:
    id: int
    points: list[tuple[float, float, float]] = field(default_factory=list)  # (t, x, y)
    missed: int = 0
    confirmed: bool = False

    def predict(self, t: float) -> tuple[float, float]:
        t1, x1, y1 = self.points[-1]
        if len(self.points) < 2:
            return x1, y1
        t0, x0, y0 = self.points[-2]
        dt = max(t1 - t0, 1e-3)
        return x1 + (x1 - x0) / dt * (t - t1), y1 + (y1 - y0) / dt * (t - t1)


@dataclass(frozen=True)
class Detection:
    track: int
    at: float  # seconds (the frame time of confirmation)
    start: float  # when the track began
    floor_low: int
    floor_high: int
    accel_g: float  # fitted downward acceleration in g
    points: tuple[tuple[float, float, float], ...]


class FallDetector:
    def __init__(
        self,
        cal: Calibration,
        min_points: int = 7,
        min_area: int = 6,
        max_area: int = 900,
        accel_range: tuple[float, float] = (0.45, 1.8),
    ) -> None:
        self.cal = cal
        self.min_points, self.min_area, self.max_area = min_points, min_area, max_area
        self.accel_range = accel_range
        self.bg = cv2.createBackgroundSubtractorMOG2(history=120, varThreshold=40, detectShadows=False)
        self.kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
        self.tracks: list[Track] = []
        self._next = 1
        self.frames = 0
        self.done: deque[Detection] = deque(maxlen=100)
        self._confirmed: list[Track] = []  # recent free falls, to tell a broken track from a new object

    def process(self, gray: npt.NDArray[Any], t: float) -> list[Detection]:
        """One frame (grayscale) at time ``t`` seconds; the detections confirmed on this frame."""
        self.frames += 1
        fg = self.bg.apply(gray, learningRate=-1)
        if self.frames < 10:  # the background model is still forming
            return []
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self.kernel)
        n, _labels, stats, cents = cv2.connectedComponentsWithStats(fg, connectivity=8)
        blobs = [
            (float(cents[i][0]), float(cents[i][1]))
            for i in range(1, n)
            if self.min_area <= stats[i, cv2.CC_STAT_AREA] <= self.max_area
        ]
        return self._track(blobs, t)

    def _track(self, blobs: list[tuple[float, float]], t: float) -> list[Detection]:
        free = list(blobs)
        for tr in sorted(self.tracks, key=lambda tr: -len(tr.points)):
            if not free:
                tr.missed += 1
                continue
            px, py = tr.predict(t)
            gate = 12.0 + 0.5 * abs(py - tr.points[-1][2])
            j = min(range(len(free)), key=lambda k: (free[k][0] - px) ** 2 + (free[k][1] - py) ** 2)
            if math.dist(free[j], (px, py)) <= gate:
                tr.points.append((t, *free.pop(j)))
                tr.missed = 0
            else:
                tr.missed += 1
        self.tracks = [tr for tr in self.tracks if tr.missed <= 2 and len(tr.points) < 200]
        for b in free:
            self.tracks.append(Track(self._next, [(t, *b)]))
            self._next += 1
        out = []
        for tr in self.tracks:
            if not tr.confirmed and len(tr.points) >= self.min_points:
                d = self._free_fall(tr)
                if d is not None:
                    tr.confirmed = True
                    if self._same_object(tr):
                        continue
                    self._confirmed.append(tr)
                    self.done.append(d)
                    out.append(d)
        return out

    def _same_object(self, tr: Track) -> bool:
        """A falling object whose track broke (lost for a few frames, then found again) is not a second one."""
        t0, x0, _y0 = tr.points[0]
        self._confirmed = [c for c in self._confirmed if t0 - c.points[-1][0] < 5.0]
        return any(abs(x0 - c.points[-1][1]) < 25 and -0.2 <= t0 - c.points[-1][0] < 2.0 for c in self._confirmed)

    def _free_fall(self, tr: Track) -> Detection | None:
        pts = np.array(tr.points[-30:])
        ts, xs, ys = pts[:, 0] - pts[0, 0], pts[:, 1], pts[:, 2]
        if ys[-1] - ys[0] < 0.5 * self.cal.px_per_floor:  # hardly moved down
            return None
        c2, c1, c0 = np.polyfit(ts, ys, 2)
        accel = 2 * c2 / self.cal.g_px
        if not self.accel_range[0] <= accel <= self.accel_range[1]:
            return None
        fit = c0 + c1 * ts + c2 * ts**2
        if float(np.sqrt(np.mean((fit - ys) ** 2))) > 3.0:  # not a smooth parabola
            return None
        vy_end = c1 + 2 * c2 * ts[-1]
        vx = float(np.polyfit(ts, xs, 1)[0])
        if vy_end <= 0 or abs(vx) > 0.5 * vy_end:  # going up, or more sideways than down (a bird)
            return None
        apex_t = -c1 / (2 * c2)  # where it was at rest: released there
        apex_y = c0 + c1 * apex_t + c2 * apex_t**2 if apex_t < 0 else ys[0]
        floor = self.cal.floor_at(float(apex_y))
        lo = max(1, min(self.cal.floors, math.floor(floor - 1)))
        hi = max(1, min(self.cal.floors, math.ceil(floor + 1)))
        return Detection(
            tr.id,
            float(pts[-1, 0] + tr.points[0][0] - tr.points[0][0]),
            tr.points[0][0],
            lo,
            hi,
            round(float(accel), 2),
            tuple(tr.points),
        )
