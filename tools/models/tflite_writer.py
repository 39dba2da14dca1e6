"""Write a small fully-connected network (a multilayer perceptron) as a TFLite flatbuffer.

Only what a calibration model needs: float32 FULLY_CONNECTED layers with optional fused ReLU, one input
[1, n] and one output [1, m]. Uses the flatbuffer schema bindings from the ``tflite`` package (dev extra).
"""

from __future__ import annotations

from pathlib import Path

import flatbuffers
import numpy as np
import numpy.typing as npt
import tflite

Layer = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], bool]  # W [out, in], b [out], relu


def _bytes(b: flatbuffers.Builder, data: bytes) -> int:
    b.StartVector(1, len(data), 16)  # weights 16-byte aligned
    b.head = b.head - len(data)
    b.Bytes[b.head : b.head + len(data)] = data
    return int(b.EndVector(len(data)))


def _ints(b: flatbuffers.Builder, values: list[int]) -> int:
    return int(b.CreateNumpyVector(np.array(values, dtype=np.int32)))


def write_mlp(layers: list[Layer], path: Path, description: str = "", names: tuple[str, str] = ("in", "out")) -> bytes:
    b = flatbuffers.Builder(4096)
    in_dim = int(layers[0][0].shape[1])
    # tensors: input, then per layer W, bias, activation; buffers: 0 empty, 1.. constants
    tensors: list[tuple[str, list[int], int]] = [(names[0], [1, in_dim], 0)]
    buffers: list[bytes] = [b""]
    ops: list[tuple[list[int], list[int], bool]] = []
    act = 0
    for i, (w, bias, relu) in enumerate(layers):
        out_dim = int(w.shape[0])
        buffers.append(np.ascontiguousarray(w, dtype="<f4").tobytes())
        tensors.append((f"dense{i}/weights", [out_dim, int(w.shape[1])], len(buffers) - 1))
        buffers.append(np.ascontiguousarray(bias, dtype="<f4").tobytes())
        tensors.append((f"dense{i}/bias", [out_dim], len(buffers) - 1))
        out_name = names[1] if i == len(layers) - 1 else f"dense{i}/out"
        tensors.append((out_name, [1, out_dim], 0))
        ops.append(([act, len(tensors) - 3, len(tensors) - 2], [len(tensors) - 1], relu))
        act = len(tensors) - 1

    buf_offs = []
    for data in buffers:
        d = _bytes(b, data) if data else None
        tflite.BufferStart(b)
        if d is not None:
            tflite.BufferAddData(b, d)
        buf_offs.append(tflite.BufferEnd(b))
    ten_offs = []
    for name, shape, buf in tensors:
        n = b.CreateString(name)
        s = _ints(b, shape)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, s)
        tflite.TensorAddType(b, tflite.TensorType.FLOAT32)
        tflite.TensorAddBuffer(b, buf)
        tflite.TensorAddName(b, n)
        ten_offs.append(tflite.TensorEnd(b))
    op_offs = []
    for inputs, outputs, relu in ops:
        tflite.FullyConnectedOptionsStart(b)
        tflite.FullyConnectedOptionsAddFusedActivationFunction(
            b, tflite.ActivationFunctionType.RELU if relu else tflite.ActivationFunctionType.NONE
        )
        opts = tflite.FullyConnectedOptionsEnd(b)
        i_vec, o_vec = _ints(b, inputs), _ints(b, outputs)
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, 0)
        tflite.OperatorAddInputs(b, i_vec)
        tflite.OperatorAddOutputs(b, o_vec)
        tflite.OperatorAddBuiltinOptionsType(b, tflite.BuiltinOptions.FullyConnectedOptions)
        tflite.OperatorAddBuiltinOptions(b, opts)
        op_offs.append(tflite.OperatorEnd(b))

    def vec(offs: list[int]) -> int:
        b.StartVector(4, len(offs), 4)
        for o in reversed(offs):
            b.PrependUOffsetTRelative(o)
        return int(b.EndVector(len(offs)))

    t_vec, o_vec = vec(ten_offs), vec(op_offs)
    sg_in, sg_out = _ints(b, [0]), _ints(b, [act])
    sg_name = b.CreateString("main")
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, t_vec)
    tflite.SubGraphAddOperators(b, o_vec)
    tflite.SubGraphAddInputs(b, sg_in)
    tflite.SubGraphAddOutputs(b, sg_out)
    tflite.SubGraphAddName(b, sg_name)
    sg = tflite.SubGraphEnd(b)

    tflite.OperatorCodeStart(b)
    tflite.OperatorCodeAddDeprecatedBuiltinCode(b, tflite.BuiltinOperator.FULLY_CONNECTED)
    tflite.OperatorCodeAddBuiltinCode(b, tflite.BuiltinOperator.FULLY_CONNECTED)
    tflite.OperatorCodeAddVersion(b, 1)
    opcode = tflite.OperatorCodeEnd(b)

    codes, sgs, bufs = vec([opcode]), vec([sg]), vec(buf_offs)
    desc = b.CreateString(description)
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, codes)
    tflite.ModelAddSubgraphs(b, sgs)
    tflite.ModelAddBuffers(b, bufs)
    tflite.ModelAddDescription(b, desc)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    out = bytes(b.Output())
    path.write_bytes(out)
    return out
