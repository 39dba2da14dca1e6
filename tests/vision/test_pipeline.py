"""The gate pipeline end to end: simulated camera frames of real photos, simulated thermal bursts, real models."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from edge.vision.gallery import Gallery
from edge.vision.pipeline import GateVision
from simulators.camera import Look, SimulatedCamera, photo
from simulators.thermal import Scene


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GateVision]:
    g = Gallery(tmp_path_factory.mktemp("gate") / "gallery.db", b"device-secret")
    vision = GateVision(g)
    a = photo("astronaut")
    face = vision.detector.refine(a, vision.detector.detect(a)[0])
    g.enroll("res-astronaut", [vision.embedder.embed(a, face)], unit="12-0304")
    rng = np.random.default_rng(0)
    g.enroll_many([(f"syn-{i}", rng.normal(size=(2, 128)).astype(np.float32), None) for i in range(500)])
    yield vision
    vision.close()
    g.close()


@pytest.fixture(scope="module")
def cam() -> SimulatedCamera:
    return SimulatedCamera()


def decide(gate: GateVision, cam: SimulatedCamera, person: str, scene: Scene, look: Look = Look()):  # type: ignore[no-untyped-def]
    return gate.decide(cam.frame(person, scene, look), cam.thermal.frames(scene, 4))


@pytest.mark.parametrize(
    "look", [Look(), Look(brightness=0.65, noise=4), Look(mirror=True, roll_deg=12), Look(brightness=1.3)]
)
def test_resident_is_let_in(gate: GateVision, cam: SimulatedCamera, look: Look) -> None:
    d = decide(gate, cam, "astronaut", Scene(distance_m=0.6, x_m=0.04), look)
    assert d.outcome == "match" and d.resident_id == "res-astronaut", d
    assert d.prompt == "welcome"
    assert d.thermal is not None and d.thermal.verdict == "pass"
    assert d.liveness is not None and d.liveness.live


def test_stranger_goes_to_the_visitor_flow(gate: GateVision, cam: SimulatedCamera) -> None:
    d = decide(gate, cam, "grace_hopper", Scene(distance_m=0.55))
    assert d.outcome == "unknown" and d.resident_id is None and d.match_reason == "below_threshold"
    assert "flat number" in d.prompt


def test_fever_keeps_the_door_closed_even_for_a_resident(gate: GateVision, cam: SimulatedCamera) -> None:
    d = decide(gate, cam, "astronaut", Scene(core_c=38.4, distance_m=0.6))
    assert d.outcome == "fever" and d.prompt == "please see the attendant"
    assert d.resident_id == "res-astronaut"  # known, for the alarm
    assert d.thermal is not None and abs(d.thermal.temperature_c - 38.4) < 0.3


@pytest.mark.parametrize("kind", ["paper", "screen"])
def test_a_photo_of_a_resident_is_a_spoof(gate: GateVision, cam: SimulatedCamera, kind: str) -> None:
    d = decide(gate, cam, "astronaut", Scene(kind=kind, ambient_c=21.0, distance_m=0.6))  # type: ignore[arg-type]
    assert d.outcome == "spoof", d
    assert d.resident_id == "res-astronaut"  # whose photo was held up, for the alarm
    assert d.liveness is not None and not d.liveness.live


def test_too_far_asks_to_step_closer_without_embedding(gate: GateVision, cam: SimulatedCamera) -> None:
    """A face too small to identify reliably (here: a low-resolution camera) gets a prompt, not a verdict."""
    scene = Scene(distance_m=0.8)
    small = cv2.resize(cam.frame("astronaut", scene), (320, 240), interpolation=cv2.INTER_AREA)
    d = gate.decide(small, cam.thermal.frames(scene, 4))
    assert d.outcome == "retry" and d.prompt == "please step closer"
    assert "embed_ms" not in d.timings_ms


def test_empty_frame(gate: GateVision, cam: SimulatedCamera) -> None:
    d = gate.decide(cam.background.copy(), cam.thermal.frames(Scene(kind="empty"), 2))
    assert d.outcome == "no_face" and d.faces == 0


def test_two_faces_decide_on_the_closest_and_count_the_other(gate: GateVision, cam: SimulatedCamera) -> None:
    near = Scene(distance_m=0.5, x_m=-0.09)
    far = cam.frame("grace_hopper", Scene(distance_m=0.9, x_m=0.28))
    frame = cam.frame("astronaut", near)
    frame[:, 420:] = far[:, 420:]  # someone further back, to the side
    d = gate.decide(frame, cam.thermal.frames(near, 4))
    assert d.faces == 2 and d.outcome == "match" and d.resident_id == "res-astronaut"


def test_timings_add_up(gate: GateVision, cam: SimulatedCamera) -> None:
    d = decide(gate, cam, "astronaut", Scene(distance_m=0.6))
    t = d.timings_ms
    assert 0 < t["inference_ms"] <= t["total_ms"]
    assert sum(v for k, v in t.items() if k not in ("total_ms", "inference_ms")) <= t["total_ms"] + 0.01


def test_decide_runs_off_the_event_loop(gate: GateVision, cam: SimulatedCamera) -> None:
    """While a decision is being made, the loop keeps serving other work (a 1 ms ticker keeps ticking)."""
    scene = Scene(distance_m=0.6)
    frame, burst = cam.frame("astronaut", scene), cam.thermal.frames(scene, 4)

    async def main() -> tuple[int, str]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                await asyncio.sleep(0.001)
                ticks += 1

        task = asyncio.create_task(ticker())
        t0 = time.perf_counter()
        d = await gate.adecide(frame, burst)
        assert time.perf_counter() - t0 > 0.005  # a real decision takes several ms
        done.set()
        await task
        return ticks, d.outcome

    ticks, outcome = asyncio.run(main())
    assert outcome == "match"
    assert ticks >= 2
