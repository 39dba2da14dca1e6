"""A camera at the foot of a building looking up its face: rendered video with objects falling from windows
and the things that are not falling objects — birds flying across, rain, a branch swaying in front of the
lens, window lights switching on and off — for the high-altitude throwing detector, its tests and benchmark.

Geometry: ``floors`` storeys of ``floor_m`` metres fill the image between ``roof_y`` and ``ground_y`` (as
fractions of its height), so a falling object accelerates at g in pixels exactly as the detector's
calibration expects. Everything is drawn from the seed: the same seed gives the same video.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.drivers.camera import Frame
from simulators.cameras import FacadeSimConfig

U8 = npt.NDArray[np.uint8]
G = 9.81


@dataclass(frozen=True)
class FacadeSpec:
    width: int = 360
    height: int = 640
    floors: int = 20
    floor_m: float = 3.0
    columns: int = 6
    roof_y: float = 0.05
    ground_y: float = 0.95
    fps: float = 15.0

    @property
    def px_per_floor(self) -> float:
        return (self.ground_y - self.roof_y) * self.height / self.floors

    @property
    def px_per_m(self) -> float:
        return self.px_per_floor / self.floor_m

    def floor_at(self, y: float) -> float:
        """The storey (1 = ground floor) whose band holds image row ``y``."""
        return self.floors - (y - self.roof_y * self.height) / self.px_per_floor + 1

    def window(self, floor: int, col: int) -> tuple[int, int, int, int]:
        """x0, y0, x1, y1 of a window."""
        top = self.roof_y * self.height + (self.floors - floor) * self.px_per_floor
        cw = self.width / self.columns
        return (
            int(col * cw + cw * 0.25),
            int(top + self.px_per_floor * 0.25),
            int(col * cw + cw * 0.75),
            int(top + self.px_per_floor * 0.75),
        )


@dataclass
class Fall:
    start_s: float
    floor: int
    x: float
    vx: float
    size: int
    shade: int

    def pos(self, t: float, spec: FacadeSpec) -> tuple[float, float] | None:
        dt = t - self.start_s
        if dt < 0:
            return None
        _x0, y0, _x1, y1 = spec.window(self.floor, 0)
        y = (y0 + y1) / 2 + 0.5 * G * spec.px_per_m * dt * dt
        if y > spec.ground_y * spec.height + 10:
            return None
        return self.x + self.vx * dt, y


@dataclass
class Bird:
    start_s: float
    y: float
    vx: float
    amp: float
    period: float

    def pos(self, t: float, spec: FacadeSpec) -> tuple[float, float] | None:
        dt = t - self.start_s
        x = (-10 if self.vx > 0 else spec.width + 10) + self.vx * dt
        if dt < 0 or not -20 <= x <= spec.width + 20:
            return None
        return x, self.y + self.amp * math.sin(2 * math.pi * dt / self.period)


@dataclass
class Scenario:
    spec: FacadeSpec
    duration_s: float
    falls: list[Fall] = field(default_factory=list)
    birds: list[Bird] = field(default_factory=list)
    rain: bool = False
    branch: bool = False
    light_switches: list[tuple[float, int, int]] = field(default_factory=list)  # (t, floor, col)
    seed: int = 0


def scenario(
    seed: int, duration_s: float = 20.0, falls: int = 1, distractors: bool = True, spec: FacadeSpec = FacadeSpec()
) -> Scenario:
    """A seeded clip: ``falls`` objects dropped from random windows at random times, and (``distractors``)
    birds, rain on half the clips, a branch on half, and lights switching."""
    rng = random.Random(seed)
    sc = Scenario(spec, duration_s, seed=seed)
    for _ in range(falls):
        floor = rng.randint(4, spec.floors)
        col = rng.randrange(spec.columns)
        x0, _y0, x1, _y1 = spec.window(floor, col)
        sc.falls.append(
            Fall(
                start_s=rng.uniform(2.0, max(2.5, duration_s - 5.0)),
                floor=floor,
                x=rng.uniform(x0, x1),
                vx=rng.uniform(-8, 8),
                size=rng.randint(4, 8),
                shade=rng.choice((20, 235)),
            )
        )
    if distractors:
        for _ in range(rng.randint(2, 5)):
            sc.birds.append(
                Bird(
                    start_s=rng.uniform(0, duration_s - 2),
                    y=rng.uniform(0.1, 0.8) * spec.height,
                    vx=rng.choice((-1, 1)) * rng.uniform(60, 160),
                    amp=rng.uniform(2, 15),
                    period=rng.uniform(0.3, 1.2),
                )
            )
        sc.rain = rng.random() < 0.5
        sc.branch = rng.random() < 0.5
        for _ in range(rng.randint(3, 8)):
            sc.light_switches.append(
                (rng.uniform(0, duration_s), rng.randint(1, spec.floors), rng.randrange(spec.columns))
            )
    return sc


class FacadeRenderer:
    """Frames of a scenario: ``frame(i)`` is the picture at ``i / fps`` seconds (RGB, uint8)."""

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        spec = sc.spec
        self.rng = np.random.default_rng(sc.seed)
        base = np.full((spec.height, spec.width, 3), (150, 145, 140), np.uint8)
        base[: int(spec.roof_y * spec.height)] = (200, 190, 170)  # sky
        base[int(spec.ground_y * spec.height) :] = (90, 90, 90)  # ground
        self.lit: dict[tuple[int, int], bool] = {}
        for f in range(1, spec.floors + 1):
            for c in range(spec.columns):
                self.lit[(f, c)] = bool(self.rng.random() < 0.3)
        self.base = base
        self.frames = int(sc.duration_s * spec.fps)
        self._rain = self.rng.uniform(0, 1, size=(60, 3)) if sc.rain else None

    def _windows(self, img: U8, t: float) -> None:
        spec = self.sc.spec
        lit = dict(self.lit)
        for ts, f, c in self.sc.light_switches:
            if t >= ts:
                lit[(f, c)] = not lit[(f, c)]
        for (f, c), on in lit.items():
            x0, y0, x1, y1 = spec.window(f, c)
            img[y0:y1, x0:x1] = (230, 220, 150) if on else (60, 70, 80)

    def frame(self, i: int) -> U8:
        sc, spec = self.sc, self.sc.spec
        t = i / spec.fps
        img = self.base.copy()
        self._windows(img, t)
        for b in sc.birds:
            p = b.pos(t, spec)
            if p is not None:
                cv2.ellipse(img, (int(p[0]), int(p[1])), (6, 2), 0, 0, 360, (40, 40, 40), -1)
        for fall in sc.falls:
            p = fall.pos(t, spec)
            if p is not None:
                s = fall.size
                cv2.rectangle(img, (int(p[0]), int(p[1])), (int(p[0]) + s, int(p[1]) + s), (fall.shade,) * 3, -1)
        if sc.branch:
            sway = 25 * math.sin(2 * math.pi * t / 2.5)
            cv2.line(img, (0, int(spec.height * 0.35)), (int(90 + sway), int(spec.height * 0.25)), (50, 70, 40), 7)
            cv2.circle(img, (int(85 + sway), int(spec.height * 0.25)), 14, (50, 80, 40), -1)
        if self._rain is not None:
            speed = 9.0 * spec.px_per_m  # raindrops fall at a steady ~9 m/s
            for x, y0, _ in self._rain:
                y = (y0 * spec.height + speed * t) % spec.height
                xx = int(x * spec.width)
                cv2.line(img, (xx, int(y)), (xx, int(y) + 5), (185, 185, 190), 1)
        noise = self.rng.normal(0, 2.0, img.shape[:2]).astype(np.int16)[..., None]
        out: U8 = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        return out


class FacadeCamera:
    """The rendered facade as a camera (``read()`` paced at the frame rate): clip after clip from ``seed`` on,
    each with ``falls`` objects dropped; ``drop(floor)`` drops one more from a floor in the current clip."""

    def __init__(self, seed: int = 0, fps: float = 15.0, clip_s: float = 30.0, falls: int = 0) -> None:
        import time

        self.spec = FacadeSpec(fps=fps)
        self.seed, self.clip_s, self.falls = seed, clip_s, falls
        self._time = time.monotonic
        self._new_clip()
        self._next = self._time()

    def _new_clip(self) -> None:
        self.scenario = scenario(self.seed, self.clip_s, self.falls, spec=self.spec)
        self.renderer = FacadeRenderer(self.scenario)
        self.i = 0
        self.seed += 1
        self._clip_t0 = getattr(self, "_clip_t0", 0.0) + getattr(self, "_clip_len", 0.0)
        self._clip_len = self.renderer.frames / self.spec.fps

    def drop(self, floor: int, col: int = 2, size: int = 6) -> Fall:
        """An object dropped now from ``floor`` (within this clip)."""
        x0, _y0, x1, _y1 = self.spec.window(floor, col)
        fall = Fall(self.i / self.spec.fps, floor, (x0 + x1) / 2, 0.0, size, 20)
        self.scenario.falls.append(fall)
        return fall

    async def read(self) -> Frame:
        import asyncio

        self._next += 1 / self.spec.fps
        delay = self._next - self._time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            self._next = self._time()
        if self.i >= self.renderer.frames:
            self._new_clip()
        rgb = await asyncio.to_thread(self.renderer.frame, self.i)
        ts = self._clip_t0 + self.i / self.spec.fps  # the video's own clock, however late the frame is
        self.i += 1
        return Frame(rgb, [], None, ts)

    async def close(self) -> None:
        return None

    def commands(self) -> dict[str, Any]:
        return {"sim-drop": self._cmd_drop}

    async def _cmd_drop(self, args: dict[str, Any]) -> dict[str, Any]:
        floor = int(args.get("floor", 10))
        self.drop(floor)
        return {"dropped_from": floor}


def open_facade(cfg: FacadeSimConfig) -> FacadeCamera:
    return FacadeCamera(cfg.seed, cfg.fps, cfg.clip_s, cfg.falls)
