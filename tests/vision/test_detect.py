"""BlazeFace with the real model on real photos: found at the right place and scale, nothing on non-faces."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from edge.vision.detect import FaceDetector, anchors

# the astronaut's face in skimage's 512×512 portrait (checked by eye: brow to chin, ear to ear)
FACE = (178, 81, 272, 175)


@pytest.fixture(scope="module")
def short() -> FaceDetector:
    return FaceDetector("short")


def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_anchor_counts() -> None:
    assert anchors(128, [8, 16, 16, 16], 2).shape == (896, 2)
    assert anchors(192, [4], 1).shape == (2304, 2)


def test_astronaut_found_in_the_right_place(short: FaceDetector) -> None:
    faces = short.detect(data.astronaut())
    assert len(faces) == 1 and faces[0].score > 0.8
    assert overlap(faces[0].box, FACE) > 0.7
    (rx, ry), (lx, ly), (nx, ny), (_mx, my) = faces[0].keypoints[:4]
    assert rx < nx < lx  # the subject's right eye is on the image's left
    assert max(ry, ly) < ny < my  # eyes above the nose, nose above the mouth


@pytest.mark.parametrize(("context", "size"), [(1.8, 200), (2.5, 640), (3.5, 320), (5.0, 1000)])
def test_found_at_several_scales_and_positions(short: FaceDetector, context: float, size: int) -> None:
    """A crop holding the face with more or less context around it, off-centre, resized to a frame size."""
    img = data.astronaut()
    cx, cy, fw = (FACE[0] + FACE[2]) / 2, (FACE[1] + FACE[3]) / 2, FACE[2] - FACE[0]
    half = context * fw / 2
    x0, y0 = int(max(0, cx - half * 0.8)), int(max(0, cy - half * 1.1))  # face off-centre in the crop
    crop = img[y0 : int(min(512, y0 + 2 * half)), x0 : int(min(512, x0 + 2 * half))]
    k = size / max(crop.shape[:2])
    frame = cv2.resize(np.ascontiguousarray(crop), None, fx=k, fy=k)
    want = tuple((v - o) * k for v, o in zip(FACE, (x0, y0, x0, y0), strict=True))
    faces = short.detect(frame)
    assert faces and overlap(faces[0].box, want) > 0.6, (faces, want)


def test_mirrored_face_found(short: FaceDetector) -> None:
    faces = short.detect(np.ascontiguousarray(data.astronaut()[:, ::-1]))
    mirrored = (512 - FACE[2], FACE[1], 512 - FACE[0], FACE[3])
    assert faces and overlap(faces[0].box, mirrored) > 0.7


@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket"])
def test_no_face_in_non_faces(short: FaceDetector, name: str) -> None:
    assert short.detect(getattr(data, name)()) == []


def test_full_range_model_agrees() -> None:
    faces = FaceDetector("full").detect(data.astronaut())
    assert len(faces) == 1 and overlap(faces[0].box, FACE) > 0.6
