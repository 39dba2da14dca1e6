"""Thermal frames and the interface a thermal array driver implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class ThermalFrame:
    """One frame of apparent temperatures in °C, shape (rows, cols), and when it was taken (monotonic s)."""

    temps: F32
    t: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.temps.shape[0]), int(self.temps.shape[1])


class ThermalSource(Protocol):
    """A thermal array (MLX90640-class 32×24, HTPA-class 80×62, …) behind I2C, serial or a simulator."""

    def read(self) -> ThermalFrame: ...


def stack(frames: list[ThermalFrame]) -> F32:
    """Frames as one (n, rows, cols) float32 array; all must have the same shape."""
    if not frames:
        raise ValueError("no thermal frames")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"thermal frames of different shapes: {sorted(shapes)}")
    return np.stack([f.temps for f in frames]).astype(np.float32, copy=False)
