"""BlazeFace face detection: letterbox, SSD anchor decoding, sigmoid scores, weighted non-maximum suppression.

Anchors follow MediaPipe's SSD anchor calculator: short range has 4 layers at strides 8, 16, 16, 16 on a
128 px input (2 anchors per 16×16 cell, then 6 per 8×8 cell = 896); full range one layer at stride 4 on
192 px (2304). Anchor size is fixed (1×1), offsets 0.5. Each regressor row is centre x, centre y, w, h and six
keypoints (right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion), in input pixels
relative to the anchor centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from edge.inference import MODELS, Delegate, Model

F32 = npt.NDArray[np.float32]
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_centre", "right_ear", "left_ear")


@dataclass(frozen=True, slots=True)
class Face:
    """A detected face in image pixels: box (x0, y0, x1, y1), 6 keypoints (x, y), score."""

    box: tuple[float, float, float, float]
    keypoints: tuple[tuple[float, float], ...]
    score: float

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]


def anchors(size: int, strides: list[int], per_layer: int) -> F32:
    """Anchor centres (N, 2), normalised, in MediaPipe's order (layers of equal stride merged)."""
    out: list[tuple[float, float]] = []
    i = 0
    while i < len(strides):
        stride, count = strides[i], 0
        while i < len(strides) and strides[i] == stride:
            count += per_layer
            i += 1
        grid = int(np.ceil(size / stride))
        for y in range(grid):
            for x in range(grid):
                out.extend([((x + 0.5) / grid, (y + 0.5) / grid)] * count)
    return np.array(out, dtype=np.float32)


VARIANTS = {
    "short": {"file": "face_detection_short_range.tflite", "size": 128, "strides": [8, 16, 16, 16], "per": 2},
    "full": {"file": "face_detection_full_range.tflite", "size": 192, "strides": [4], "per": 1},
}


def _iou(a: F32, b: F32) -> F32:
    """IoU of one box a (4,) with boxes b (N, 4)."""
    x0 = np.maximum(a[0], b[:, 0])
    y0 = np.maximum(a[1], b[:, 1])
    x1 = np.minimum(a[2], b[:, 2])
    y1 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.asarray(inter / np.maximum(area, 1e-9), dtype=np.float32)


def weighted_nms(boxes: F32, kps: F32, scores: F32, iou: float) -> list[tuple[F32, F32, float]]:
    """Blend each cluster of overlapping detections, weighted by score (MediaPipe's WEIGHTED mode)."""
    order = np.argsort(-scores)
    boxes, kps, scores = boxes[order], kps[order], scores[order]
    out = []
    alive = np.ones(len(scores), dtype=bool)
    for i in range(len(scores)):
        if not alive[i]:
            continue
        overlap = (_iou(boxes[i], boxes) > iou) & alive
        w = scores[overlap][:, None]
        out.append(((boxes[overlap] * w).sum(0) / w.sum(), (kps[overlap] * w).sum(0) / w.sum(), float(scores[i])))
        alive &= ~overlap
    return out


class FaceDetector:
    def __init__(
        self,
        variant: Literal["short", "full"] = "short",
        threads: int = 2,
        min_score: float = 0.5,
        iou: float = 0.3,
        delegate: Delegate = "xnnpack",
        library: str | None = None,
    ) -> None:
        v = VARIANTS[variant]
        self.model = Model(MODELS / str(v["file"]), threads, delegate, library)
        self.size = int(v["size"])  # type: ignore[call-overload]
        self.anchors = anchors(self.size, list(v["strides"]), int(v["per"]))  # type: ignore[call-overload]
        self.min_score = min_score
        self.iou = iou

    def _letterbox(self, rgb: npt.NDArray[np.uint8]) -> tuple[F32, float, int, int]:
        h, w = rgb.shape[:2]
        scale = self.size / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        canvas = np.zeros((self.size, self.size, 3), dtype=np.uint8)
        px, py = (self.size - nw) // 2, (self.size - nh) // 2
        canvas[py : py + nh, px : px + nw] = resized
        x = canvas.astype(np.float32)[None] / 127.5 - 1.0
        return x, scale, px, py

    def detect(self, rgb: npt.NDArray[np.uint8]) -> list[Face]:
        """Faces in an RGB uint8 image (H, W, 3), largest first."""
        x, scale, px, py = self._letterbox(rgb)
        outs = self.model.run(x)
        reg = next(o for o in outs if o.shape[-1] == 16)[0]
        raw = next(o for o in outs if o.shape[-1] == 1)[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(raw, -80.0, 80.0)))
        keep = scores >= self.min_score
        if not keep.any():
            return []
        reg, scores, anc = reg[keep] / self.size, scores[keep], self.anchors[keep]
        cx, cy = reg[:, 0] + anc[:, 0], reg[:, 1] + anc[:, 1]
        bw, bh = reg[:, 2], reg[:, 3]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        kps = reg[:, 4:16].reshape(-1, 6, 2) + anc[:, None, :]
        faces = []
        for box, kp, score in weighted_nms(
            boxes.astype(np.float32), kps.reshape(-1, 12).astype(np.float32), scores.astype(np.float32), self.iou
        ):
            # from the letterboxed square back to image pixels
            b = (box * self.size - [px, py, px, py]) / scale
            k = (kp.reshape(6, 2) * self.size - [px, py]) / scale
            faces.append(Face(tuple(float(v) for v in b), tuple((float(a), float(c)) for a, c in k), score))  # type: ignore[arg-type]
        return sorted(faces, key=lambda f: -f.width)

    def refine(self, rgb: npt.NDArray[np.uint8], face: Face, context: float = 1.6) -> Face:
        """Detect again on a square crop around ``face`` so it fills the model's input: keypoints of a face
        that was small in the letterboxed frame get several times more precise (and alignment with them)."""
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = face.box
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * context
        c0, r0 = int(max(0, cx - half)), int(max(0, cy - half))
        c1, r1 = int(min(w, cx + half)), int(min(h, cy + half))
        if (c1 - c0) * self.size / max(h, w) >= 0.9 * self.size:  # already as large as it can get
            return face
        found = self.detect(rgb[r0:r1, c0:c1])
        if not found:
            return face
        g = found[0]
        return Face(
            (g.box[0] + c0, g.box[1] + r0, g.box[2] + c0, g.box[3] + r0),
            tuple((x + c0, y + r0) for x, y in g.keypoints),
            g.score,
        )
