"""The shipped model files are the documented ones, and behave as the documentation says."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from edge.inference import MODELS, Model
from edge.vision.detect import FaceDetector
from edge.vision.embed import Embedder, align
from simulators.camera import photo

README = (MODELS / "README.md").read_text()


@pytest.mark.parametrize(
    "name", ["face_detection_short_range.tflite", "face_detection_full_range.tflite", "sface_int8dr.tflite"]
)
def test_model_file_matches_its_documented_sha256(name: str) -> None:
    row = next(line for line in README.splitlines() if line.startswith(f"| `{name}`"))
    want = re.findall(r"[0-9a-f]{64}", row)
    assert want, f"no sha256 for {name} in the README"
    assert hashlib.sha256((MODELS / name).read_bytes()).hexdigest() == want[0]


@pytest.mark.parametrize(
    ("name", "shape_in", "shapes_out"),
    [
        ("face_detection_short_range.tflite", (1, 128, 128, 3), {(1, 896, 16), (1, 896, 1)}),
        ("face_detection_full_range.tflite", (1, 192, 192, 3), {(1, 2304, 16), (1, 2304, 1)}),
        ("sface_int8dr.tflite", (1, 112, 112, 3), {(1, 128)}),
    ],
)
def test_model_shapes(name: str, shape_in: tuple[int, ...], shapes_out: set[tuple[int, ...]]) -> None:
    m = Model(MODELS / name, 1)
    assert m.input_shape == shape_in
    assert {o.shape for o in m.run(np.zeros(shape_in, np.float32))} == shapes_out


def test_sface_separates_the_real_faces() -> None:
    """Behaviour of the shipped embedding: the same face mirrored scores high, another person low."""
    det, emb = FaceDetector(), Embedder(1)
    crops = []
    for name in ("astronaut", "grace_hopper"):
        img = photo(name)
        crops.append(align(img, det.refine(img, det.detect(img)[0])))
    same = float(emb.embed_aligned(crops[0]) @ emb.embed_aligned(np.ascontiguousarray(crops[0][:, ::-1])))
    other = float(emb.embed_aligned(crops[0]) @ emb.embed_aligned(crops[1]))
    assert same > 0.7 and other < 0.3
