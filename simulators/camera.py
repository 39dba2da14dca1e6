"""A simulated gate camera: frames made from real face photos placed at a scene's distance and position.

The photo is warped so that its eyes land where a real face at ``Scene.distance_m`` and ``(x_m, y_m)`` would
appear in a 640×480 camera (interpupillary distance 63 mm), with brightness, roll, sensor noise and mirroring
as variations; the rest of the frame is a plain corridor wall. ``arrivals`` produces people walking up to the
terminal with matching thermal bursts from ``simulators.thermal``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from edge.thermal.frame import ThermalFrame
from edge.thermal.geometry import IPD_M
from simulators.thermal import EYE_DY, Scene, ThermalSimulator

U8 = npt.NDArray[np.uint8]
FACES = Path(__file__).resolve().parent / "faces"
# eye centres (subject's right eye first, i.e. the image's left) in each photo, from the project's detector
PHOTOS: dict[str, tuple[str, tuple[tuple[float, float], tuple[float, float]]]] = {
    "astronaut": ("astronaut.png", ((204.0, 101.0), (248.0, 108.0))),
    "grace_hopper": ("grace_hopper.jpg", ((222.0, 192.0), (309.0, 189.0))),
}


@cache
def photo(name: str) -> U8:
    if name not in PHOTOS:
        raise KeyError(f"unknown face photo {name!r}; have {sorted(PHOTOS)}")
    return np.asarray(Image.open(FACES / PHOTOS[name][0]).convert("RGB"))


def enrol_photo(
    gallery: Path, secret: bytes, resident: str, person: str = "astronaut", unit: str | None = None
) -> None:
    """Enrol ``person``'s photo as ``resident`` in a gate's gallery file, as the gate itself would store it."""
    from edge.vision.detect import FaceDetector
    from edge.vision.embed import Embedder
    from edge.vision.gallery import Gallery

    det, emb, face = FaceDetector(), Embedder(1), photo(person)
    g = Gallery(gallery, secret)
    try:
        g.enroll(resident, [emb.embed(face, det.refine(face, det.detect(face)[0]))], unit=unit)
    finally:
        g.close()


@dataclass(frozen=True, slots=True)
class Look:
    """How the camera sees the person this time."""

    brightness: float = 1.0
    roll_deg: float = 0.0
    noise: float = 0.0  # sensor noise, σ in grey levels
    mirror: bool = False


@dataclass
class SimulatedCamera:
    thermal: ThermalSimulator = field(default_factory=ThermalSimulator)
    wall: tuple[int, int, int] = (118, 112, 104)

    def __post_init__(self) -> None:
        g = self.thermal.registration.rgb
        self.size = (g.width, g.height)
        ys = np.linspace(0.85, 1.1, g.height, dtype=np.float32)[:, None, None]
        self.background = np.clip(np.array(self.wall, dtype=np.float32) * ys, 0, 255).astype(np.uint8)
        self.background = np.ascontiguousarray(np.broadcast_to(self.background, (g.height, g.width, 3)))

    def frame(self, person: str, scene: Scene, look: Look = Look()) -> U8:
        src = photo(person)
        (rx, ry), (lx, ly) = PHOTOS[person][1]
        if look.mirror:  # a mirrored photo: the eyes swap sides
            w = src.shape[1]
            src = np.ascontiguousarray(src[:, ::-1])
            (rx, ry), (lx, ly) = (w - 1 - lx, ly), (w - 1 - rx, ry)
        g = self.thermal.registration.rgb
        target_mid = g.project(scene.x_m, scene.y_m + EYE_DY, scene.distance_m)
        target_ed = g.f * IPD_M / scene.distance_m
        src_ed = math.hypot(lx - rx, ly - ry)
        src_angle = math.degrees(math.atan2(ly - ry, lx - rx))
        m = cv2.getRotationMatrix2D(((rx + lx) / 2, (ry + ly) / 2), src_angle + look.roll_deg, target_ed / src_ed)
        m[0, 2] += target_mid[0] - (rx + lx) / 2
        m[1, 2] += target_mid[1] - (ry + ly) / 2
        warped = cv2.warpAffine(src, m, self.size, flags=cv2.INTER_AREA if target_ed < src_ed else cv2.INTER_LINEAR)
        mask = cv2.warpAffine(np.full(src.shape[:2], 255, np.uint8), m, self.size)
        out = np.where(mask[..., None] > 127, warped, self.background).astype(np.float32) * look.brightness
        if look.noise > 0:
            out += self.thermal.rng.normal(0.0, look.noise, out.shape).astype(np.float32)
        return np.asarray(np.clip(out, 0, 255), dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class Arrival:
    """One person walking up to the terminal: frames as they approach, with a thermal burst for each."""

    person: str
    scene: Scene  # where they stop
    look: Look
    steps: tuple[tuple[U8, list[ThermalFrame]], ...]


def arrivals(
    cam: SimulatedCamera,
    people: list[str],
    n: int,
    fever_share: float = 0.05,
    spoof_share: float = 0.0,
    approach: int = 3,
    thermal_frames: int = 4,
) -> Iterator[Arrival]:
    """n arrivals: a person from ``people`` walks from 1.2 m to a stop at 0.45–0.8 m in ``approach`` frames."""
    rng = cam.thermal.rng
    for _ in range(n):
        person = people[int(rng.integers(len(people)))]
        fever = rng.random() < fever_share
        kind: Literal["person", "paper", "screen"] = "person"
        if rng.random() < spoof_share:
            kind = "paper" if rng.random() < 0.5 else "screen"
        stop = cam.thermal.random_scene(
            core_c=float(rng.uniform(37.8, 39.5) if fever else rng.normal(36.8, 0.25)),
            ambient_c=float(rng.uniform(15.0, 32.0)),
            distance_m=float(rng.uniform(0.45, 0.8)),
            kind=kind,
        )
        look = Look(
            brightness=float(rng.uniform(0.6, 1.3)),
            roll_deg=float(rng.normal(0, 6)),
            noise=float(rng.uniform(0, 5)),
            mirror=bool(rng.random() < 0.5),
        )
        steps = []
        for d in np.linspace(1.2, stop.distance_m, approach) if approach > 1 else [stop.distance_m]:
            s = replace(stop, distance_m=float(d))
            steps.append((cam.frame(person, s, look), cam.thermal.frames(s, thermal_frames)))
        yield Arrival(person, stop, look, tuple(steps))
