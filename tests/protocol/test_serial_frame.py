"""The serial frame module against shared vectors, under CPython and the real MicroPython unix port."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import serial_frame as sf

HERE = Path(__file__).parent
PROTOCOL_DIR = HERE.parent.parent / "protocol"
VECTORS = HERE / "serial_vectors.json"
SCRIPT = HERE / "mp_serial_vectors.py"


@pytest.mark.parametrize("interpreter", ["cpython", "micropython"])
def test_vectors_pass_in_both_interpreters(interpreter: str, micropython: Path) -> None:
    exe = sys.executable if interpreter == "cpython" else str(micropython)
    out = subprocess.run(
        [exe, str(SCRIPT), str(PROTOCOL_DIR), str(VECTORS)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr + out.stdout
    assert out.stdout.strip() == "OK 30"


def test_known_check_values() -> None:
    assert sf.crc16(b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE catalogue check value
    assert sf.cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"


@given(st.binary(max_size=600))
def test_cobs_round_trip_has_no_zero(data: bytes) -> None:
    enc = sf.cobs_encode(data)
    assert 0 not in enc
    assert sf.cobs_decode(enc) == data


@given(st.sampled_from(sf.KINDS), st.integers(0, 255), st.integers(0, 255), st.binary(max_size=sf.MAX_PAYLOAD))
def test_frame_round_trip(kind: int, seq: int, op: int, payload: bytes) -> None:
    frame = sf.encode_frame(kind, seq, op, payload)
    assert frame.count(0) == 1 and frame.endswith(b"\x00")
    assert sf.decode_frame(frame) == (kind, seq, op, payload)


@given(st.binary(max_size=400))
def test_reader_never_raises_on_noise(noise: bytes) -> None:
    reader = sf.FrameReader()
    frames = reader.feed(noise + b"\x00" + sf.encode_frame(sf.KIND_EVT, 7, sf.OP_LOG, b"ok"))
    assert frames[-1] == (sf.KIND_EVT, 7, sf.OP_LOG, b"ok")


def test_payload_too_long_refused() -> None:
    with pytest.raises(sf.FrameError) as exc:
        sf.encode_frame(sf.KIND_REQ, 1, sf.OP_PING, bytes(sf.MAX_PAYLOAD + 1))
    assert exc.value.reason == "too_long"
