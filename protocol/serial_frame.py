"""Serial frames between a gateway and microcontroller boards (I/O board, elevator car board).

This one file runs unchanged on CPython and MicroPython (no typing imports, no dataclasses, no
f-string formatting specs), so the gateway and the firmware share the exact same code.

Wire format, one frame::

    COBS( ver_kind | seq | op | payload[0..MAX_PAYLOAD] | crc16_hi | crc16_lo ) 0x00

- ``ver_kind``: high nibble protocol version (1), low nibble kind: REQ 1, RSP 2, EVT 3 (unsolicited), NAK 4.
- ``seq``: 0..255; a response carries its request's seq, events count on their own.
- ``op``: operation code (see ``OP_*``).
- CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over ver_kind..payload, big-endian.
- COBS removes every 0x00 from the frame, so 0x00 only ever delimits frames and a reader can resync
  after noise by waiting for the next 0x00.
"""

VERSION = 1
KIND_REQ = 1
KIND_RSP = 2
KIND_EVT = 3
KIND_NAK = 4
KINDS = (KIND_REQ, KIND_RSP, KIND_EVT, KIND_NAK)

OP_PING = 0x01
OP_INFO = 0x02
OP_READ_INPUTS = 0x10
OP_SET_OUTPUTS = 0x11
OP_PULSE_OUTPUT = 0x12
OP_WATCHDOG_KICK = 0x20
OP_WATCHDOG_CONFIG = 0x21
OP_READ_SENSORS = 0x30
OP_CONFIG_SET = 0x40
OP_INPUT_CHANGED = 0x80
OP_SAFE_STATE = 0x81
OP_SENSOR_EVENT = 0x82
OP_LOG = 0x90

MAX_PAYLOAD = 250
HEADER_LEN = 3
CRC_LEN = 2
MAX_ENCODED = HEADER_LEN + MAX_PAYLOAD + CRC_LEN + 2  # + COBS overhead (1 per 254) + delimiter

# NAK payload byte 0: why the request was refused
NAK_BAD_OP = 1
NAK_BAD_ARGS = 2
NAK_BUSY = 3
NAK_FAULT = 4


class FrameError(ValueError):
    """A frame that cannot be accepted; ``reason`` is one of cobs, crc, short, version, kind, too_long."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason + (": " + detail if detail else ""))
        self.reason = reason


def crc16(data: "bytes | bytearray", crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE; crc16(b"123456789") == 0x29B1."""
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            if crc & 0x8000:
                crc = ((crc << 1) ^ 0x1021) & 0xFFFF
            else:
                crc = (crc << 1) & 0xFFFF
    return crc


def cobs_encode(data: "bytes | bytearray") -> bytes:
    """Consistent Overhead Byte Stuffing (without the trailing delimiter)."""
    out = bytearray()
    idx = 0
    n = len(data)
    while True:
        block = bytearray()
        while idx < n and data[idx] != 0 and len(block) < 254:
            block.append(data[idx])
            idx += 1
        out.append(len(block) + 1)
        out.extend(block)
        if idx >= n:
            break
        if len(block) < 254:
            idx += 1  # consume the zero this block stood for
            if idx == n:
                out.append(1)
                break
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    out = bytearray()
    idx = 0
    n = len(data)
    while idx < n:
        code = data[idx]
        if code == 0:
            raise FrameError("cobs", "zero byte inside frame")
        end = idx + code
        if end > n:
            raise FrameError("cobs", "block runs past the end")
        for j in range(idx + 1, end):
            if data[j] == 0:
                raise FrameError("cobs", "zero byte inside frame")
            out.append(data[j])
        idx = end
        if code < 255 and idx < n:
            out.append(0)
    return bytes(out)


def encode_frame(kind: int, seq: int, op: int, payload: bytes = b"") -> bytes:
    """Build one wire frame, delimiter included."""
    if kind not in KINDS:
        raise FrameError("kind", "unknown kind " + str(kind))
    if len(payload) > MAX_PAYLOAD:
        raise FrameError("too_long", str(len(payload)) + " > " + str(MAX_PAYLOAD))
    body = bytearray()
    body.append((VERSION << 4) | kind)
    body.append(seq & 0xFF)
    body.append(op & 0xFF)
    body.extend(payload)
    crc = crc16(body)
    body.append(crc >> 8)
    body.append(crc & 0xFF)
    return cobs_encode(body) + b"\x00"


def decode_frame(data: bytes) -> tuple[int, int, int, bytes]:
    """Decode one frame (with or without the trailing 0x00) into (kind, seq, op, payload)."""
    if len(data) and data[len(data) - 1] == 0:
        data = data[: len(data) - 1]
    if len(data) > MAX_ENCODED:
        raise FrameError("too_long", str(len(data)) + " bytes")
    raw = cobs_decode(data)
    if len(raw) < HEADER_LEN + CRC_LEN:
        raise FrameError("short", str(len(raw)) + " bytes")
    body = raw[: len(raw) - CRC_LEN]
    got = (raw[len(raw) - 2] << 8) | raw[len(raw) - 1]
    if crc16(body) != got:
        raise FrameError("crc", "checksum mismatch")
    if body[0] >> 4 != VERSION:
        raise FrameError("version", "version " + str(body[0] >> 4))
    kind = body[0] & 0x0F
    if kind not in KINDS:
        raise FrameError("kind", "unknown kind " + str(kind))
    return kind, body[1], body[2], bytes(body[HEADER_LEN:])


class FrameReader:
    """Splits a byte stream into frames, skipping and counting damaged ones.

    ``feed(chunk)`` returns the list of good frames completed by ``chunk`` as (kind, seq, op, payload);
    ``errors`` maps a reason to how many frames were dropped for it.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False
        self.errors = {}  # type: dict[str, int]
        self.frames = 0

    def _count(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def feed(self, chunk: bytes) -> list[tuple[int, int, int, bytes]]:
        out = []  # type: list[tuple[int, int, int, bytes]]
        for b in chunk:
            if b != 0:
                if len(self._buf) < MAX_ENCODED:
                    self._buf.append(b)
                else:
                    self._overflow = True
                continue
            if self._overflow:
                self._count("too_long")
            elif len(self._buf):
                try:
                    out.append(decode_frame(bytes(self._buf)))
                    self.frames += 1
                except FrameError as exc:
                    self._count(exc.reason)
            self._buf = bytearray()
            self._overflow = False
        return out


# --- I/O board payloads (big-endian; bit n of a 16-bit map is channel n) -------------------------
# read inputs     REQ ()                          RSP inputs:u16 outputs:u16
# set outputs     REQ mask:u16 values:u16         RSP outputs:u16
# pulse output    REQ channel:u8 ms:u16           RSP outputs:u16   (on now, off after ms)
# watchdog config REQ timeout_ms:u16 safe:u16     RSP ()            (0 = off; safe = outputs on timeout)
# watchdog kick   REQ ()                          RSP ()
# input changed   EVT inputs:u16 changed:u16
# safe state      EVT outputs:u16


def u16(value: int) -> bytes:
    return bytes(((value >> 8) & 0xFF, value & 0xFF))


def get_u16(payload: bytes, offset: int = 0) -> int:
    if len(payload) < offset + 2:
        raise FrameError("short", "payload needs " + str(offset + 2) + " bytes")
    return (payload[offset] << 8) | payload[offset + 1]
