"""Recorded approaches to a gate camera made from the shipped face photos: live people and presentation attacks.

Each sequence is what a 640×480 camera records at ``fps`` while someone walks up from 1 m and stands at the
terminal (``simulators.camera`` renders the frames):
* ``live`` — a person whose head moves as people's do while they wait (turns of 3–7°, small nods);
* ``live_still`` — a person standing unusually still (under 1°): the motion cue must ask them to turn;
* ``paper`` — a colour print of the photo held up and turned in the hand (2–10°);
* ``screen`` — the photo on a phone or tablet, turned in the hand;
* ``replay`` — a video of the live person played on a screen: the motion cue cannot tell (thermal can).
``record`` writes them as numbered PNG frames with their capture times, so a rig can replay them through a
camera source.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from simulators.camera import PHOTOS, U8, Look, Pose, SimulatedCamera
from simulators.thermal import Scene

KINDS = ("live", "live_still", "paper", "screen", "replay")
ATTACKS = ("paper", "screen", "replay")


@dataclass(frozen=True, slots=True)
class Sequence:
    kind: str
    person: str
    seed: int
    frames: tuple[tuple[U8, float], ...]  # (RGB frame, capture time in s from the start)


def _wave(rng: np.random.Generator, amplitude: tuple[float, float], freq: tuple[float, float]) -> tuple[float, ...]:
    return float(rng.uniform(*amplitude)), float(rng.uniform(*freq)), float(rng.uniform(0, 2 * math.pi))


def _at(w: tuple[float, ...], t: float) -> float:
    a, f, phase = w
    return a * math.sin(2 * math.pi * f * t + phase)


def sequence(
    kind: str, person: str, seed: int, seconds: float = 4.0, fps: float = 10.0, cam: SimulatedCamera | None = None
) -> Sequence:
    if kind not in KINDS:
        raise ValueError(f"unknown sequence kind {kind!r}; have {KINDS}")
    if person not in PHOTOS:
        raise ValueError(f"unknown face photo {person!r}; have {sorted(PHOTOS)}")
    rng = np.random.default_rng(seed)
    cam = cam or SimulatedCamera()
    stop = float(rng.uniform(0.5, 0.75))
    look = Look(
        brightness=float(rng.uniform(0.75, 1.2)),
        roll_deg=float(rng.normal(0, 4)),
        noise=float(rng.uniform(0, 3)),
        mirror=bool(rng.random() < 0.5),
    )
    still = kind == "live_still"
    head_yaw = _wave(rng, (0.3, 1.0) if still else (3.0, 7.0), (0.3, 0.6))
    head_pitch = _wave(rng, (0.2, 0.6) if still else (1.0, 3.0), (0.2, 0.5))
    tilt_yaw = _wave(rng, (1.0, 4.0) if kind == "replay" else (2.0, 10.0), (0.3, 0.8))
    tilt_pitch = _wave(rng, (1.0, 5.0), (0.3, 0.8))
    sway = _wave(rng, (0.002, 0.01), (0.3, 1.2))
    scene_kind = "person" if kind.startswith("live") else kind
    frames = []
    for i in range(int(seconds * fps)):
        t = i / fps
        k = min(1.0, t / 0.6)
        d = 1.0 + (stop - 1.0) * (1 - (1 - k) ** 2)  # walking up, slowing down
        scene = Scene(distance_m=d, x_m=_at(sway, t), kind=scene_kind)  # type: ignore[arg-type]
        if scene_kind == "person":
            pose = Pose(_at(head_yaw, t), _at(head_pitch, t))
        else:
            pose = Pose(_at(tilt_yaw, t), _at(tilt_pitch, t), _at(head_yaw, t), _at(head_pitch, t))
        frames.append((cam.frame(person, scene, look, pose), t))
    return Sequence(kind, person, seed, tuple(frames))


def sequences(n_per_kind: int, seed: int = 0, seconds: float = 4.0, fps: float = 10.0) -> Iterator[Sequence]:
    """``n_per_kind`` sequences of every kind, the shipped photos taken in turn; reproducible from ``seed``."""
    people = sorted(PHOTOS)
    cam = SimulatedCamera()
    for kind in KINDS:
        for i in range(n_per_kind):
            yield sequence(
                kind, people[i % len(people)], seed * 100_003 + KINDS.index(kind) * 1009 + i, seconds, fps, cam
            )


def record(seq: Sequence, out: Path) -> Path:
    """Write one sequence as ``NNNN.png`` frames and ``sequence.json`` (kind, person, capture times)."""
    where = out / f"{seq.kind}-{seq.person}-{seq.seed}"
    where.mkdir(parents=True, exist_ok=True)
    for i, (rgb, _t) in enumerate(seq.frames):
        cv2.imwrite(str(where / f"{i:04d}.png"), rgb[:, :, ::-1])
    meta = {"kind": seq.kind, "person": seq.person, "seed": seq.seed, "times_s": [t for _f, t in seq.frames]}
    (where / "sequence.json").write_text(json.dumps(meta))
    return where
