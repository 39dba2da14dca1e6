"""A simulated thermal camera: renders a person at a chosen body temperature, ambient temperature and distance.

The physical model (also what the calibration model is trained on, see ``edge/thermal/models/README.md``):

* **Skin temperature.** Each facial region sits between the core temperature and the ambient air according to
  how well it is perfused: ``T_skin = T_amb + (T_core − T_amb)·r``, with r = 0.93 at the inner canthus (the
  warmest, most stable point of the face), 0.88 around the eyes, 0.86 forehead, 0.80 cheeks, 0.74 nose tip,
  0.45 hair, 0.82 neck, 0.35 clothing. Each person's canthus ratio varies a little (σ = 0.004).
* **Radiometry.** Skin emissivity 0.98; the 2 % reflected comes from surroundings at ambient. The air between
  face and sensor transmits ``exp(−0.01·d)`` and emits the rest at ambient. Temperatures are mixed as radiant
  exitance (T⁴, kelvin).
* **Optics.** The scene is rendered at 6×6 sub-pixels per sensor pixel and averaged (a pixel sees its whole
  footprint, so a small hot spot far away reads cooler), then blurred by the lens (Gaussian σ = 0.4 px).
* **Sensor.** A fixed pattern per pixel (σ = 0.05 °C), an offset that drifts per scene (±0.6 °C), temporal noise
  (σ = 0.1 °C per frame), 0.01 °C quantisation. A blackbody reference at a known temperature fills a 4×4
  pixel patch in the bottom-right corner (when fitted).

Spoofs: a paper photo sits at ambient (+0.2 °C from the hand holding it); a phone screen is a uniform 31 °C
rectangle covering the face as the camera sees it (a phone held close, or a tablet). The person behind still
shows neck and clothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from edge.thermal.frame import ThermalFrame
from edge.thermal.geometry import Registration, RegistrationConfig

F32 = npt.NDArray[np.float32]
K0 = 273.15
SUB = 6
RATIO = {"canthus": 0.93, "eyes": 0.88, "forehead": 0.86, "cheek": 0.80, "nose": 0.74, "hair": 0.45}
NECK, CLOTHING = 0.82, 0.35
EMISSIVITY = 0.98
FACE_W, FACE_H = 0.15, 0.21  # metres (ellipse axes)
EYE_DY = -0.03  # eye line above the face centre
BLACKBODY_PX = 4


@dataclass(frozen=True, slots=True)
class Scene:
    """What stands in front of the terminal. x, y: face centre offset from the RGB axis (m); distance: m."""

    core_c: float = 36.8
    ambient_c: float = 22.0
    distance_m: float = 0.6
    x_m: float = 0.0
    y_m: float = 0.0
    canthus_ratio: float = RATIO["canthus"]
    drift_c: float = 0.0
    kind: Literal["person", "paper", "screen", "replay", "empty"] = "person"  # replay: a video on a screen


@dataclass
class ThermalSimulator:
    """Renders frames of a scene; ``blackbody_c`` is the reference's set point (None: no reference fitted)."""

    registration: Registration = field(default_factory=lambda: Registration.from_config(RegistrationConfig()))
    blackbody_c: float | None = 38.0
    noise_c: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        g = self.registration.thermal
        self.fixed_pattern = self.rng.normal(0.0, 0.05, (g.height, g.width)).astype(np.float32)

    def random_scene(self, **fixed: float | str) -> Scene:
        """A plausible arrival: body 35.5–40.0 °C, ambient 10–38 °C, 0.35–1.1 m, a little off-centre."""
        r = self.rng
        s = Scene(
            core_c=float(r.uniform(35.5, 40.0)),
            ambient_c=float(r.uniform(10.0, 38.0)),
            distance_m=float(r.uniform(0.35, 1.1)),
            x_m=float(r.uniform(-0.08, 0.08)),
            y_m=float(r.uniform(-0.06, 0.06)),
            canthus_ratio=float(r.normal(RATIO["canthus"], 0.004)),
            drift_c=float(r.uniform(-0.6, 0.6)),
        )
        return replace(s, **fixed)  # type: ignore[arg-type]

    def _exitance(self, s: Scene, X: F32, Y: F32) -> F32:
        """Radiant exitance (T⁴, kelvin) reaching the sensor from face-plane points (X, Y) in metres."""
        ratio = np.zeros(X.shape, dtype=np.float32)  # 0 = background at ambient
        inside = (X / (FACE_W / 2)) ** 2 + (Y / (FACE_H / 2)) ** 2 <= 1.0
        ratio[(Y > 0.17) & (np.abs(X) < 0.22)] = CLOTHING
        ratio[(Y > 0.08) & (Y <= 0.17) & (np.abs(X) < 0.05)] = NECK
        if s.kind == "person":
            face = np.full(X.shape, RATIO["cheek"], dtype=np.float32)
            face[Y < -0.045] = RATIO["forehead"]
            face[Y < -0.075] = RATIO["hair"]
            for ex in (-0.0315, 0.0315):
                face[(X - ex) ** 2 + (Y - EYE_DY) ** 2 < 0.014**2] = RATIO["eyes"]
            for ex in (-0.014, 0.014):
                face[(X - ex) ** 2 + (Y - EYE_DY) ** 2 < 0.006**2] = s.canthus_ratio
            face[X**2 + (Y - 0.005) ** 2 < 0.012**2] = RATIO["nose"]
            ratio = np.where(inside, face, ratio)
        temps = (s.ambient_c + (s.core_c - s.ambient_c) * ratio).astype(np.float32)
        if s.kind == "paper":
            temps = np.where(inside, np.float32(s.ambient_c + 0.2), temps)
        elif s.kind in ("screen", "replay"):
            temps = np.where((np.abs(X) < 0.08) & (np.abs(Y) < 0.11), np.float32(31.0), temps)
        # radiometry: emissivity with reflected ambient, then the air path
        t4 = (temps + np.float32(K0)) ** 4
        amb4 = np.float32((s.ambient_c + K0) ** 4)
        t4 = np.where(ratio > 0, EMISSIVITY * t4 + (1 - EMISSIVITY) * amb4, t4)
        tau = np.float32(np.exp(-0.01 * s.distance_m))
        return np.asarray(tau * t4 + (1 - tau) * amb4, dtype=np.float32)

    def _plane(self, s: Scene, cols: F32, rows: F32) -> tuple[F32, F32]:
        """Thermal pixel coordinates → face-plane coordinates relative to the face centre (m)."""
        g = self.registration.thermal
        bx, by = self.registration.baseline
        cx, cy = g.centre
        X = (cols[None, :] - cx) * s.distance_m / g.f + bx - s.x_m
        Y = (rows[:, None] - cy) * s.distance_m / g.f + by - s.y_m
        return (
            np.broadcast_to(X, (len(rows), len(cols))).astype(np.float32),
            np.broadcast_to(Y, (len(rows), len(cols))).astype(np.float32),
        )

    def truth_scene_temps(self, s: Scene) -> F32:
        """Apparent temperatures (°C) at sensor resolution before sensor noise and drift."""
        g = self.registration.thermal
        # one sample per pixel for the whole frame, then 6×6 sub-pixels where the face and neck are
        t4 = self._exitance(
            s, *self._plane(s, np.arange(g.width, dtype=np.float32) + 0.5, np.arange(g.height, dtype=np.float32) + 0.5)
        )
        bx, by = self.registration.baseline
        k = g.f / s.distance_m
        cx, cy = g.centre
        c0 = max(0, int(np.floor(cx + k * (s.x_m - bx - FACE_W / 2))) - 1)
        c1 = min(g.width, int(np.ceil(cx + k * (s.x_m - bx + FACE_W / 2))) + 1)
        r0 = max(0, int(np.floor(cy + k * (s.y_m - by - FACE_H / 2))) - 1)
        r1 = min(g.height, int(np.ceil(cy + k * (s.y_m - by + 0.17))) + 1)
        if c1 > c0 and r1 > r0:
            cols = (c0 + (np.arange((c1 - c0) * SUB) + 0.5) / SUB).astype(np.float32)
            rows = (r0 + (np.arange((r1 - r0) * SUB) + 0.5) / SUB).astype(np.float32)
            fine = self._exitance(s, *self._plane(s, cols, rows))
            t4[r0:r1, c0:c1] = fine.reshape(r1 - r0, SUB, c1 - c0, SUB).mean(axis=(1, 3))
        t4 = np.asarray(cv2.GaussianBlur(t4, (0, 0), 0.4), dtype=np.float32)  # the lens
        out = (t4**0.25 - K0).astype(np.float32)
        if self.blackbody_c is not None:
            out[-BLACKBODY_PX:, -BLACKBODY_PX:] = self.blackbody_c
        return out

    def frames(self, s: Scene, n: int = 4, t0: float = 0.0, hz: float = 8.0) -> list[ThermalFrame]:
        """A burst of n frames of the scene as the sensor reports them."""
        base = self.truth_scene_temps(s) + self.fixed_pattern + np.float32(s.drift_c)
        out = []
        for i in range(n):
            noisy = base + self.rng.normal(0.0, self.noise_c, base.shape).astype(np.float32)
            out.append(ThermalFrame(np.round(noisy, 2).astype(np.float32), t0 + i / hz))
        return out

    def face_in_rgb(self, s: Scene) -> tuple[tuple[float, float, float, float], tuple[tuple[float, float], ...]]:
        """Where the face of a scene appears in the RGB image: box and the 6 BlazeFace keypoints (ground truth)."""
        g = self.registration.rgb
        pts = [
            (-0.0315, EYE_DY),
            (0.0315, EYE_DY),
            (0.0, 0.005),
            (0.0, 0.045),
            (-0.07, -0.005),
            (0.07, -0.005),
        ]  # the subject's right eye appears on the image's left
        kps = tuple(g.project(s.x_m + px, s.y_m + py, s.distance_m) for px, py in pts)
        x0, y0 = g.project(s.x_m - FACE_W / 2, s.y_m - FACE_H / 2 + 0.02, s.distance_m)
        x1, y1 = g.project(s.x_m + FACE_W / 2, s.y_m + FACE_H / 2, s.distance_m)
        return (x0, y0, x1, y1), kps


class SimulatedThermalArray:
    """A thermal array driver (``edge.thermal.frame.ThermalSource``) looking at whatever scene is set."""

    def __init__(self, sim: ThermalSimulator | None = None, hz: float = 8.0) -> None:
        self.sim = sim or ThermalSimulator()
        self.scene = Scene(kind="empty")
        self.hz = hz
        self._n = 0

    def read(self) -> ThermalFrame:
        frame = self.sim.frames(self.scene, 1, t0=self._n / self.hz, hz=self.hz)[0]
        self._n += 1
        return frame
