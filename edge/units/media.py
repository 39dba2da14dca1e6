"""Stills for the bulk lane: an RGB image as a JPEG small enough for one ``media.snapshot`` message, at the
best quality (and size) that fits — used by the gate (visitor snapshots), the perimeter (intrusion stills) and
the throwing camera (frame strips)."""

from __future__ import annotations

import base64
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from protocol.messages import MediaSnapshot, SnapshotPurpose

STEPS = ((80, 1.0), (60, 0.6), (50, 0.35))  # (JPEG quality, scale), tried in order


def jpeg_snapshot(
    rgb: npt.NDArray[Any],
    ref: str,
    purpose: SnapshotPurpose,
    max_bytes: int,
    steps: tuple[tuple[int, float], ...] = STEPS,
) -> tuple[MediaSnapshot, bytes] | None:
    """The message and the JPEG bytes, or None if even the last step does not fit."""
    for quality, scale in steps:
        img = rgb if scale == 1.0 else cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and len(buf) <= max_bytes:
            data = buf.tobytes()
            msg = MediaSnapshot(
                ref=ref, content_type="image/jpeg", data_b64=base64.b64encode(data).decode(), purpose=purpose
            )
            return msg, data
    return None
