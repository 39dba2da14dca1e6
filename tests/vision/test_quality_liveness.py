"""Quality gates on real photos and liveness on simulated thermal frames of people, paper photos and screens."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from edge.thermal.screen import ThermalScreen
from edge.vision.detect import Face, FaceDetector
from edge.vision.embed import align
from edge.vision.liveness import assess as liveness
from edge.vision.quality import assess, pose
from simulators.thermal import Scene, ThermalSimulator


@pytest.fixture(scope="module")
def det() -> FaceDetector:
    return FaceDetector()


def quality(det: FaceDetector, img: np.ndarray):  # type: ignore[no-untyped-def]
    face = det.refine(img, det.detect(img)[0])
    return assess(face, align(img, face))


def test_a_good_face_passes(det: FaceDetector) -> None:
    q = quality(det, data.astronaut())
    assert q.ok and q.prompt == ""


@pytest.mark.parametrize(
    ("name", "change", "issue", "prompt"),
    [
        ("dark", lambda a: (a * 0.12).astype(np.uint8), "too_dark", "please look at the camera"),
        (
            "glare",
            lambda a: np.clip(a.astype(np.float32) * 2.4, 0, 255).astype(np.uint8),
            "too_bright",
            "please look at the camera",
        ),
        ("blurred", lambda a: cv2.GaussianBlur(a, (0, 0), 2.5), "blurred", "please hold still"),
        ("far", lambda a: cv2.resize(a, None, fx=0.5, fy=0.5), "too_small", "please step closer"),
    ],
)
def test_poor_faces_get_a_prompt_not_a_reject(det: FaceDetector, name: str, change, issue: str, prompt: str) -> None:  # type: ignore[no-untyped-def]
    q = quality(det, change(data.astronaut()))
    assert q.issue == issue, (name, q.metrics)
    assert q.prompt == prompt


def test_off_axis_pose_from_keypoints() -> None:
    def face(nose_x: float, nose_y: float = 60.0) -> Face:
        kps = ((40.0, 40.0), (80.0, 40.0), (nose_x, nose_y), (60.0, 80.0), (20.0, 45.0), (100.0, 45.0))
        return Face((10.0, 10.0, 110.0, 110.0), kps, 0.9)

    assert abs(pose(face(60.0))[0]) < 0.01
    assert pose(face(72.0))[0] == pytest.approx(0.3)  # nose 12 px off the eye midpoint, eyes 40 px apart
    crop = np.full((112, 112, 3), 128, np.uint8)
    crop[::2] = 90  # some texture so only the pose can fail
    assert assess(face(72.0), crop).issue == "off_axis"
    assert assess(face(60.0, 43.0), crop).issue == "off_axis"  # looking far up: nose near the eye line


@pytest.fixture(scope="module")
def screen() -> ThermalScreen:
    return ThermalScreen()


@pytest.mark.parametrize("ambient", [14.0, 22.0, 29.0])
def test_live_person_paper_and_screen(screen: ThermalScreen, ambient: float) -> None:
    sim = ThermalSimulator(seed=int(ambient))
    results = {}
    for kind in ("person", "paper", "screen"):
        s = Scene(kind=kind, ambient_c=ambient, distance_m=0.6)  # type: ignore[arg-type]
        box, kps = sim.face_in_rgb(s)
        results[kind] = liveness(screen.screen(sim.frames(s, 4), box, kps).features)
    assert results["person"].live and results["person"].score >= 0.9, results["person"]
    assert not results["paper"].live and results["paper"].reason == "no body heat (a photo or a print)"
    # a warm screen: flat where a face has a hot inner canthus, or simply not warm enough
    assert not results["screen"].live
    assert results["screen"].reason in ("flat heat profile (a screen)", "no body heat (a photo or a print)")


def test_near_body_temperature_ambient_is_reported_inconclusive(screen: ThermalScreen) -> None:
    sim = ThermalSimulator(seed=3)
    s = Scene(kind="paper", ambient_c=35.5)
    box, kps = sim.face_in_rgb(s)
    lv = liveness(screen.screen(sim.frames(s, 4), box, kps).features)
    assert "inconclusive" in lv.reason and lv.score < 1.0


def test_greyscale_print_fails_the_colour_cue(det: FaceDetector) -> None:
    a = data.astronaut()
    grey = cv2.cvtColor(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    face = det.detect(grey)[0]
    lv = liveness(None, align(grey, face))
    assert not lv.live and lv.reason == "no colour (a greyscale print or display)"
    assert liveness(None, align(a, det.detect(a)[0])).live
