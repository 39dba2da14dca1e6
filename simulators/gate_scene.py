"""What stands in front of a simulated gate terminal: arrivals of real face photos with a thermal array.

``arrive()`` puts a person (or a paper photo, or a screen) in front of the camera for ``dwell_s``; ``read()``
returns frames at the configured rate — the person walking up over the first frames, then standing — and an
empty corridor otherwise. Used by the gate unit when its camera is ``type: simulated`` (a plug-in of the camera
registry, see ``simulators.cameras``; driven by the ``sim-arrive`` command it adds) and by tests directly.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import replace
from typing import Any

from edge.drivers.camera import Frame
from simulators.camera import Look, Pose, SimulatedCamera
from simulators.cameras import SimulatedCameraConfig
from simulators.thermal import Scene, ThermalSimulator


class SimulatedGateScene:
    def __init__(self, fps: float = 10.0, seed: int = 0) -> None:
        self.cam = SimulatedCamera(ThermalSimulator(seed=seed))
        self.period = 1.0 / fps
        self.person: str | None = None
        self.scene = Scene(kind="empty")
        self.look = Look()
        self.until = 0.0
        self.started = 0.0
        self.approach_s = 0.4
        self._next = time.monotonic()
        self.frames = 0
        self.waves = [(0.0, 0.0, 0.0), (0.0, 0.0, 0.0)]

    def arrive(self, person: str, scene: Scene, look: Look = Look(), dwell_s: float = 3.0) -> None:
        self.person, self.scene, self.look = person, scene, look
        self.started = time.monotonic()
        self.until = self.started + dwell_s
        rng = self.cam.thermal.rng  # how this person's head moves while they wait (a picture: the hand's tilt)
        self.waves = [
            (float(rng.uniform(*a)), float(rng.uniform(0.3, 0.6)), float(rng.uniform(0, 6.28)))
            for a in ((3, 7), (1, 3))
        ]

    def pose(self, t: float) -> Pose:
        """Head turns of a few degrees (people do not stand still); a held picture tilts as much."""
        (ay, fy, py), (ap, fp, pp) = self.waves
        return Pose(
            ay * math.sin(6.283 * fy * t + py), ap * math.sin(6.283 * fp * t + pp), ay * math.sin(6.283 * fy * t + py)
        )

    def leave(self) -> None:
        self.until = 0.0

    def _current(self) -> tuple[str | None, Scene]:
        now = time.monotonic()
        if self.person is None or now >= self.until:
            return None, Scene(kind="empty", ambient_c=self.scene.ambient_c)
        k = min(1.0, (now - self.started) / self.approach_s) if self.approach_s else 1.0
        d = 1.05 + (self.scene.distance_m - 1.05) * k  # walking up from the edge of the detector's reach
        return self.person, replace(self.scene, distance_m=d)

    def render(self) -> Frame:
        person, scene = self._current()
        t = time.monotonic() - self.started
        rgb = self.cam.background.copy() if person is None else self.cam.frame(person, scene, self.look, self.pose(t))
        thermal = self.cam.thermal.frames(scene, 4)
        self.frames += 1
        return Frame(rgb, thermal, None, ts=time.monotonic())

    async def read(self) -> Frame:
        self._next += self.period
        delay = self._next - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            self._next = time.monotonic()
        return await asyncio.to_thread(self.render)

    async def close(self) -> None:
        return None

    def commands(self) -> dict[str, Any]:
        return {"sim-arrive": self._cmd_arrive}

    async def _cmd_arrive(self, args: dict[str, Any]) -> dict[str, Any]:
        person, scene, look, dwell = scene_from_args(args)
        self.arrive(person, scene, look, dwell)
        return {"arriving": person}


def open_scene(cfg: SimulatedCameraConfig) -> SimulatedGateScene:
    return SimulatedGateScene(cfg.fps, cfg.seed)


def scene_from_args(args: dict[str, object]) -> tuple[str, Scene, Look, float]:
    """The ``sim-arrive`` command's arguments: person, kind, core_c, ambient_c, distance_m, dwell_s, look."""
    person = str(args.get("person", "astronaut"))
    scene = Scene(
        core_c=float(args.get("core_c", 36.8)),  # type: ignore[arg-type]
        ambient_c=float(args.get("ambient_c", 22.0)),  # type: ignore[arg-type]
        distance_m=float(args.get("distance_m", 0.6)),  # type: ignore[arg-type]
        kind=str(args.get("kind", "person")),  # type: ignore[arg-type]
    )
    look = Look(brightness=float(args.get("brightness", 1.0)), mirror=bool(args.get("mirror", False)))  # type: ignore[arg-type]
    return person, scene, look, float(args.get("dwell_s", 3.0))  # type: ignore[arg-type]
