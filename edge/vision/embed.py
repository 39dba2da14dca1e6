"""Alignment to the ArcFace 112×112 template and the SFace 128-d embedding (L2-normalised)."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from edge.inference import MODELS, Delegate, Model
from edge.vision.detect import Face

F32 = npt.NDArray[np.float32]

# ArcFace template (112×112): right eye, left eye, nose tip; BlazeFace gives a mouth centre, so the mouth point
# is the midpoint of the template's two mouth corners.
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [56.14, 92.28]], dtype=np.float32)


def align(rgb: npt.NDArray[np.uint8], face: Face) -> npt.NDArray[np.uint8]:
    """A 112×112 crop, similarity-transformed so eyes, nose and mouth sit on the template."""
    src = np.array(face.keypoints[:4], dtype=np.float32)
    m, _ = cv2.estimateAffinePartial2D(src, TEMPLATE, method=cv2.LMEDS)
    if m is None:  # degenerate keypoints: fall back to the box
        x0, y0, x1, y1 = face.box
        m = cv2.getAffineTransform(
            np.array([[x0, y0], [x1, y0], [x0, y1]], dtype=np.float32),
            np.array([[0, 0], [112, 0], [0, 112]], dtype=np.float32),
        )
    return np.asarray(cv2.warpAffine(rgb, m, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))


class Embedder:
    def __init__(self, threads: int = 2, delegate: Delegate = "xnnpack", library: str | None = None) -> None:
        self.model = Model(MODELS / "sface_int8dr.tflite", threads, delegate, library)

    def embed_aligned(self, crop_rgb: npt.NDArray[np.uint8]) -> F32:
        """Embedding of an aligned 112×112 RGB crop (the model wants BGR 0..255)."""
        x = crop_rgb[:, :, ::-1].astype(np.float32)[None]
        v = self.model.run(np.ascontiguousarray(x))[0][0]
        return np.asarray(v / max(float(np.linalg.norm(v)), 1e-12), dtype=np.float32)

    def embed(self, rgb: npt.NDArray[np.uint8], face: Face) -> F32:
        return self.embed_aligned(align(rgb, face))
