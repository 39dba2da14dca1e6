"""LiteRT delegates: the CPU paths give the same embeddings; a delegate whose library is missing stops with an
error naming the library and the fix."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from pydantic import ValidationError

from edge.inference import DELEGATE_LIBRARIES, DelegateError
from edge.vision.config import VisionConfig
from edge.vision.detect import FaceDetector
from edge.vision.embed import Embedder
from simulators.camera import photo


def test_cpu_and_xnnpack_agree() -> None:
    img = photo("astronaut")
    det = FaceDetector("short", 1, delegate="cpu")
    face = det.refine(img, det.detect(img)[0])
    a = Embedder(1, delegate="cpu").embed(img, face)
    b = Embedder(1, delegate="xnnpack").embed(img, face)
    assert float(np.dot(a, b)) > 0.99


@pytest.mark.parametrize(("delegate", "library"), [("edgetpu", "libedgetpu.so.1"), ("gpu", "libtensorflowlite_gpu")])
def test_a_missing_delegate_library_is_named(delegate: str, library: str) -> None:
    try:
        ctypes.CDLL(DELEGATE_LIBRARIES[delegate])
    except OSError:
        pass
    else:
        pytest.skip(f"this machine has {library}: the delegate loads")
    with pytest.raises(DelegateError) as err:
        Embedder(1, delegate=delegate)  # type: ignore[arg-type]
    assert library in str(err.value) and "vision.delegate: xnnpack" in str(err.value)


def test_an_unknown_delegate_is_a_settings_error() -> None:
    with pytest.raises(ValidationError, match="xnnpack"):
        VisionConfig.model_validate({"delegate": "tpu"})
    assert VisionConfig.model_validate({"delegate_library": "/opt/lib/libedgetpu.so.1"}).delegate == "xnnpack"
