"""Thermal screening with the shipped calibration model on simulated thermal frames (no interpreter mocks)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edge.thermal.geometry import Registration, RegistrationConfig
from edge.thermal.screen import CALIBRATION_MODEL, ThermalConfig, ThermalScreen
from simulators.thermal import Scene, ThermalSimulator


@pytest.fixture(scope="module")
def screen() -> ThermalScreen:
    return ThermalScreen(ThermalConfig(fever_c=37.3))


def read(screen: ThermalScreen, sim: ThermalSimulator, scene: Scene, frames: int = 4):  # type: ignore[no-untyped-def]
    box, kps = sim.face_in_rgb(scene)
    return screen.screen(sim.frames(scene, frames), box, kps)


def test_shipped_calibration_model_is_the_documented_file() -> None:
    readme = (CALIBRATION_MODEL.parent / "README.md").read_text()
    want = re.search(r"thermal_calibration\.tflite.*?([0-9a-f]{64})", readme, re.S)
    assert want, "the models README must list the file's sha256"
    assert hashlib.sha256(CALIBRATION_MODEL.read_bytes()).hexdigest() == want.group(1)


@pytest.mark.parametrize("ambient", [12.0, 22.0, 30.0])
@pytest.mark.parametrize("distance", [0.45, 0.8])
def test_fever_and_no_fever_at_the_threshold_plus_minus_0_2(
    screen: ThermalScreen, ambient: float, distance: float
) -> None:
    sim = ThermalSimulator(seed=int(ambient * 10 + distance * 100))
    hot = read(screen, sim, Scene(core_c=37.5, ambient_c=ambient, distance_m=distance, drift_c=0.4))
    ok = read(screen, sim, Scene(core_c=37.1, ambient_c=ambient, distance_m=distance, drift_c=-0.4))
    assert hot.verdict == "fever", hot
    assert ok.verdict == "pass", ok
    assert abs(hot.temperature_c - 37.5) < 0.2 and abs(ok.temperature_c - 37.1) < 0.2


def test_error_over_random_arrivals_is_small(screen: ThermalScreen) -> None:
    sim = ThermalSimulator(seed=99)
    errs = []
    for _ in range(60):
        s = sim.random_scene(distance_m=float(sim.rng.uniform(0.4, 0.9)))
        r = read(screen, sim, s)
        if r.temperature_c is not None and r.verdict != "retry":
            errs.append(abs(r.temperature_c - s.core_c))
    assert len(errs) >= 50
    assert float(np.percentile(errs, 95)) < 0.3


def test_drift_is_removed_by_the_blackbody(screen: ThermalScreen) -> None:
    sim = ThermalSimulator(seed=5)
    a = read(screen, sim, Scene(core_c=36.9, drift_c=-0.6))
    b = read(screen, sim, Scene(core_c=36.9, drift_c=0.6))
    assert a.features and b.features
    assert a.features.drift_c == pytest.approx(-0.6, abs=0.1) and b.features.drift_c == pytest.approx(0.6, abs=0.1)
    assert abs(a.temperature_c - b.temperature_c) < 0.15


def test_too_far_or_out_of_view_asks_again(screen: ThermalScreen) -> None:
    sim = ThermalSimulator(seed=6)
    far = read(screen, sim, Scene(distance_m=1.6))
    assert far.verdict == "retry" and far.reason == "please step closer"
    box, kps = sim.face_in_rgb(Scene())
    shifted = tuple((x + 2000, y) for x, y in kps)
    gone = screen.screen(sim.frames(Scene(), 2), box, shifted)
    assert gone.verdict == "retry" and gone.temperature_c is None and gone.reason.startswith("please")


def test_a_paper_photo_has_no_body_temperature(screen: ThermalScreen) -> None:
    sim = ThermalSimulator(seed=7)
    r = read(screen, sim, Scene(kind="paper", ambient_c=22.0))
    assert r.verdict == "retry" and r.reason == "no body temperature reading"
    assert r.temperature_c is not None and r.temperature_c < 30


def test_threshold_is_configurable_in_tenths_within_range() -> None:
    assert ThermalConfig(fever_c=38.0).fever_c == 38.0
    for bad in (33.9, 39.1, 37.25):
        with pytest.raises(ValidationError):
            ThermalConfig(fever_c=bad)


def test_registration_maps_a_face_onto_the_thermal_array() -> None:
    reg = Registration.from_config(RegistrationConfig())
    sim = ThermalSimulator()
    s = Scene(distance_m=0.6, x_m=0.05, y_m=-0.03)
    _, kps = sim.face_in_rgb(s)
    eye_px = float(np.hypot(kps[1][0] - kps[0][0], kps[1][1] - kps[0][1]))
    assert reg.distance(eye_px) == pytest.approx(0.6, rel=1e-6)
    # the warmest pixel of a rendered face sits where the eyes map to
    t = sim.truth_scene_temps(s)
    t[-4:, -4:] = 0  # ignore the blackbody
    r, c = np.unravel_index(int(np.argmax(t)), t.shape)
    (u0, v0), (u1, v1) = (reg.to_thermal(x, y, 0.6) for x, y in kps[:2])
    # pixel centres are at +0.5; the hottest pixel is one inner canthus, 1.4 cm off the eye midpoint
    assert abs(c + 0.5 - (u0 + u1) / 2) <= 2.5 and abs(r + 0.5 - (v0 + v1) / 2) <= 1.5


def test_calibration_training_script_writes_a_working_model(tmp_path: Path) -> None:
    """The training script (small run) produces a TFLite file LiteRT loads and that beats a fixed offset."""
    import subprocess
    import sys

    out = tmp_path / "cal.tflite"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [
            sys.executable,
            str(root / "tools/models/train_thermal_calibration.py"),
            "--samples",
            "600",
            "--steps",
            "600",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    import json

    report = json.loads(proc.stdout)
    assert report["abs_err_p95_c"] < 0.3 < report["fixed_offset_p95_c"]
    from edge.inference import Model

    m = Model(out, 1)
    y = m.run(np.array([[35.9, 34.0, 22.0, 0.6]], dtype=np.float32))[0]
    assert y.shape == (1, 1) and 35.5 < float(y[0, 0]) < 38.5
