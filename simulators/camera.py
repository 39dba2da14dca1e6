"""A simulated gate camera: frames made from real face photos placed at a scene's distance and position.

The photo is warped so that its eyes land where a real face at ``Scene.distance_m`` and ``(x_m, y_m)`` would
appear in a 640×480 camera (interpupillary distance 63 mm), with brightness, roll, sensor noise and mirroring
as variations; the rest of the frame is a plain corridor wall.

A live person is a solid head: the photo is draped over a head-shaped depth map (an ellipsoid with a nose and
eye sockets, in eye distances) and turned by the ``Pose`` about a neck axis behind the face, in perspective,
so a head that turns shows parallax as a real one does. Presentation attacks are flat: a ``paper`` print
(white margin, the reduced contrast and softness of a print), a ``screen`` showing the photo (black bezel, a
display's tint and line pattern), and a ``replay`` — a video of the live head played on a screen. Their
``Pose`` tilts the picture's plane, as a hand holding it does. ``arrivals`` produces people walking up to the
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
F32 = npt.NDArray[np.float32]
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
class Pose:
    """A head's turn (live) or a picture's tilt (spoofs), degrees; yaw turns left/right, pitch nods."""

    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    head_yaw_deg: float = 0.0  # replay: the recorded head's own turn inside the tilted screen
    head_pitch_deg: float = 0.0


GRID = 4
NECK_EDS = 1.6  # the head turns about an axis this far behind the face (eye distances, ≈ 10 cm)


@cache
def _face_coords(shape: tuple[int, int], eyes: tuple[tuple[float, float], tuple[float, float]]) -> tuple[F32, ...]:
    """Per source pixel: face-plane coordinates X, Y and the head's depth Z, all in eye distances (Y down, Z
    towards the camera; the eye line at Y = 0, the face's front at Z ≈ 0); plus the eye axes and distance."""
    h, w = shape
    (rx, ry), (lx, ly) = eyes
    ed = math.hypot(lx - rx, ly - ry)
    ex = ((lx - rx) / ed, (ly - ry) / ed)
    ey = (-ex[1], ex[0])
    # on a grid GRID times coarser than the photo: the motion field is smooth, one full-size remap at the end
    u, v = np.meshgrid(
        np.arange(0, w, GRID, dtype=np.float32) + (GRID - 1) / 2,
        np.arange(0, h, GRID, dtype=np.float32) + (GRID - 1) / 2,
    )
    du, dv = u - (rx + lx) / 2, v - (ry + ly) / 2
    X = (du * ex[0] + dv * ex[1]) / ed
    Y = (du * ey[0] + dv * ey[1]) / ed
    head = 1.3 * np.sqrt(np.clip(1 - (X / 1.35) ** 2 - ((Y - 0.45) / 1.9) ** 2, 0, 1)) - 1.3
    nose = 0.42 * np.exp(-(X**2 / (2 * 0.16**2) + (Y - 0.6) ** 2 / (2 * 0.32**2)))
    sockets = -0.1 * (np.exp(-((X - 0.5) ** 2 + Y**2) / 0.06) + np.exp(-((X + 0.5) ** 2 + Y**2) / 0.06))
    Z = (head + nose + sockets).astype(np.float32)
    axes = np.array([ex[0], ex[1], ey[0], ey[1], ed], dtype=np.float32)
    return u, v, X.astype(np.float32), Y.astype(np.float32), Z, axes


def turn(
    src: U8,
    eyes: tuple[tuple[float, float], tuple[float, float]],
    yaw_deg: float,
    pitch_deg: float,
    distance_m: float,
    solid: bool,
) -> U8:
    """The picture as the camera sees it once turned: a solid head about its neck, or a flat picture about its
    own plane (a homography), in perspective at ``distance_m``."""
    if abs(yaw_deg) < 1e-3 and abs(pitch_deg) < 1e-3 and not solid:
        return src
    u, v, X, Y, Zface, axes = _face_coords(src.shape[:2], eyes)
    ex0, ex1, ey0, ey1, ed = (float(a) for a in axes)
    Z = Zface if solid else np.zeros_like(X)
    zc = -NECK_EDS if solid else 0.0
    th, ph = math.radians(yaw_deg), math.radians(pitch_deg)
    zr = Z - zc
    x1 = X * math.cos(th) + zr * math.sin(th)
    zr1 = -X * math.sin(th) + zr * math.cos(th)
    y2 = Y * math.cos(ph) + zr1 * math.sin(ph)
    zr2 = -Y * math.sin(ph) + zr1 * math.cos(ph)
    d = distance_m / IPD_M
    s = d / (d - (zr2 + zc))
    dx, dy = (x1 * s - X) * ed, (y2 * s - Y) * ed
    fu = (dx * ex0 + dy * ey0).astype(np.float32)
    fv = (dx * ex1 + dy * ey1).astype(np.float32)
    mx, my = u.copy(), v.copy()
    for _ in range(4):  # where each output pixel comes from: p = q − f(p), by fixed-point iteration
        cx, cy = (mx - (GRID - 1) / 2) / GRID, (my - (GRID - 1) / 2) / GRID
        mx = u - cv2.remap(fu, cx, cy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        my = v - cv2.remap(fv, cx, cy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    h, w = src.shape[:2]
    full_x = cv2.resize(mx, (w, h), interpolation=cv2.INTER_LINEAR)
    full_y = cv2.resize(my, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.asarray(cv2.remap(src, full_x, full_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))


def _picture(
    src: U8, eyes: tuple[tuple[float, float], tuple[float, float]], kind: str
) -> tuple[U8, tuple[tuple[float, float], tuple[float, float]]]:
    """The photo as a print (white margin, softer, less contrast) or on a screen (black bezel, tint, lines)."""
    h, w = src.shape[:2]
    pad = int(0.07 * max(h, w))
    img = src.astype(np.float32)
    if kind == "paper":
        img = np.asarray(cv2.GaussianBlur(25 + 0.82 * img, (0, 0), 0.45), dtype=np.float32)
        fill = 245.0
    else:
        lines = 1 + 0.05 * np.sin(np.arange(h, dtype=np.float32) * (2 * math.pi / 3.3))[:, None, None]
        img = (18 + 0.9 * img) * lines + np.array([0, 2, 10], dtype=np.float32)
        fill = 12.0
    out = cv2.copyMakeBorder(
        np.clip(img, 0, 255).astype(np.uint8), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(fill,) * 3
    )
    (rx, ry), (lx, ly) = eyes
    return np.asarray(out), ((rx + pad, ry + pad), (lx + pad, ly + pad))


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

    def frame(self, person: str, scene: Scene, look: Look = Look(), pose: Pose = Pose()) -> U8:
        src = photo(person)
        eyes = PHOTOS[person][1]
        if look.mirror:  # a mirrored photo: the eyes swap sides
            w = src.shape[1]
            src = np.ascontiguousarray(src[:, ::-1])
            (rx, ry), (lx, ly) = eyes
            eyes = ((w - 1 - lx, ly), (w - 1 - rx, ry))
        if scene.kind in ("paper", "screen", "replay"):
            if scene.kind == "replay":  # the recording of a live head, then shown on a screen
                src = turn(src, eyes, pose.head_yaw_deg, pose.head_pitch_deg, scene.distance_m, solid=True)
            src, eyes = _picture(src, eyes, "paper" if scene.kind == "paper" else "screen")
            src = turn(src, eyes, pose.yaw_deg, pose.pitch_deg, scene.distance_m, solid=False)
        else:
            src = turn(src, eyes, pose.yaw_deg, pose.pitch_deg, scene.distance_m, solid=True)
        (rx, ry), (lx, ly) = eyes
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
