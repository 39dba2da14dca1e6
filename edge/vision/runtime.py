"""A thin wrapper over the LiteRT interpreter: load once, fixed threads, named outputs by shape."""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

MODELS = Path(__file__).resolve().parent / "models"


def trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise). Worth it after one-off bulk work
    such as loading models or a gallery in a process that then runs for months on a small board."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # platforms without a LiteRT wheel
        from tflite_runtime.interpreter import Interpreter
    return Interpreter


class Model:
    """One loaded model. ``run`` is thread-safe (one inference at a time per model)."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        if not path.exists():
            raise FileNotFoundError(f"model file {path} is missing; reinstall the package (it ships the models)")
        self.path = path
        self._it = _interpreter_class()(model_path=str(path), num_threads=threads)
        self._it.allocate_tensors()
        self._input = self._it.get_input_details()[0]
        self.input_shape: tuple[int, ...] = tuple(int(x) for x in self._input["shape"])
        self._outputs = self._it.get_output_details()
        self._lock = threading.Lock()
        self.last_ms = 0.0  # duration of the latest inference (set tensor, invoke, read outputs)
        self.total_ms = 0.0  # all inferences so far

    def run(self, x: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        with self._lock:
            t0 = time.perf_counter()
            self._it.set_tensor(self._input["index"], x)
            self._it.invoke()
            out = [np.array(self._it.get_tensor(o["index"])) for o in self._outputs]
            self.last_ms = (time.perf_counter() - t0) * 1000
            self.total_ms += self.last_ms
            return out
