"""A thin wrapper over the LiteRT interpreter: load once, fixed threads, named outputs by shape, and the
delegate that runs it.

Delegates (``vision.delegate``):
* ``xnnpack`` — LiteRT's default CPU path (XNNPACK kernels, ARM NEON on a Pi): the default;
* ``cpu`` — LiteRT's built-in kernels without the default delegate (a baseline, or where XNNPACK misbehaves);
* ``edgetpu`` — a Coral Edge TPU through ``libedgetpu.so.1`` (the ``libedgetpu1-std`` package); only the
  operations of a model compiled with ``edgetpu_compiler`` run on the TPU, the rest stays on the CPU;
* ``gpu`` — the GPU delegate library (``libtensorflowlite_gpu_delegate.so``, built for the board: OpenCL on a
  Jetson or a Mali-based board).
A delegate library that cannot be loaded stops the model loading with an error naming the library.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

MODELS = Path(__file__).resolve().parent / "vision" / "models"  # the shipped models (faces, thermal calibration)
Delegate = Literal["cpu", "xnnpack", "edgetpu", "gpu"]
DELEGATE_LIBRARIES: dict[str, str] = {"edgetpu": "libedgetpu.so.1", "gpu": "libtensorflowlite_gpu_delegate.so"}
DELEGATE_PACKAGES = {
    "edgetpu": "install the Edge TPU runtime (apt install libedgetpu1-std from Coral's repository)",
    "gpu": "build or install LiteRT's GPU delegate for this board and give its path as vision.delegate_library",
}


class DelegateError(RuntimeError):
    """The configured delegate cannot be used on this machine; the message names the library and the fix."""


def trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise). Worth it after one-off bulk work
    such as loading models or a gallery in a process that then runs for months on a small board."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _litert() -> Any:
    try:
        from ai_edge_litert import interpreter
    except ImportError:  # platforms without a LiteRT wheel
        from tflite_runtime import interpreter
    return interpreter


def load_delegate(delegate: Delegate, library: str | None = None) -> Any:
    """The loaded delegate object for ``edgetpu``/``gpu`` (None for the CPU paths)."""
    if delegate in ("cpu", "xnnpack"):
        return None
    lib = library or DELEGATE_LIBRARIES[delegate]
    try:
        ctypes.CDLL(lib)  # a missing library is named here (LiteRT's own loader leaves a half-made object behind)
        return _litert().load_delegate(lib)
    except (ValueError, OSError, RuntimeError) as exc:
        raise DelegateError(
            f"vision.delegate {delegate}: the delegate library {lib} cannot be loaded ({exc}); "
            f"{DELEGATE_PACKAGES[delegate]}, or set vision.delegate: xnnpack"
        ) from None


def interpreter(path: Path, threads: int, delegate: Delegate = "xnnpack", library: str | None = None) -> Any:
    litert = _litert()
    kwargs: dict[str, Any] = {"model_path": str(path), "num_threads": threads}
    if delegate == "cpu":
        kwargs["experimental_op_resolver_type"] = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    elif delegate != "xnnpack":
        kwargs["experimental_delegates"] = [load_delegate(delegate, library)]
    return litert.Interpreter(**kwargs)


class Model:
    """One loaded model. ``run`` is thread-safe (one inference at a time per model)."""

    def __init__(
        self, path: Path, threads: int = 2, delegate: Delegate = "xnnpack", library: str | None = None
    ) -> None:
        if not path.exists():
            raise FileNotFoundError(f"model file {path} is missing; reinstall the package (it ships the models)")
        self.path = path
        self.delegate = delegate
        self._it = interpreter(path, threads, delegate, library)
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
