# Runs under MicroPython (and CPython): checks protocol/serial_frame.py against the shared vectors.
# usage: micropython mp_serial_vectors.py PROTOCOL_DIR VECTORS_JSON
import binascii
import json
import sys

sys.path.insert(0, sys.argv[1])
import serial_frame as sf


def unhex(s):
    return binascii.unhexlify(s)


with open(sys.argv[2]) as f:
    vec = json.load(f)
n = 0
for c in vec["crc16"]:
    assert sf.crc16(unhex(c["data_hex"])) == c["crc"], c
    n += 1
for c in vec["cobs"]:
    assert sf.cobs_encode(unhex(c["raw_hex"])) == unhex(c["enc_hex"]), c["raw_hex"][:16]
    assert sf.cobs_decode(unhex(c["enc_hex"])) == unhex(c["raw_hex"]), c["raw_hex"][:16]
    n += 1
for c in vec["frames"]:
    frame = sf.encode_frame(c["kind"], c["seq"], c["op"], unhex(c["payload_hex"]))
    assert frame == unhex(c["frame_hex"]), c
    assert sf.decode_frame(frame) == (c["kind"], c["seq"], c["op"], unhex(c["payload_hex"])), c
    n += 1
for c in vec["bad_frames"]:
    try:
        sf.decode_frame(unhex(c["frame_hex"]))
        raise AssertionError("accepted a bad frame: " + c["frame_hex"][:20])
    except sf.FrameError as e:
        assert e.reason == c["reason"], (e.reason, c["reason"])
    n += 1
s = vec["stream"]
data = unhex(s["hex"])
reader = sf.FrameReader()
got = []
for i in range(0, len(data), s["chunk"]):
    got.extend(reader.feed(data[i : i + s["chunk"]]))
want = [(k, q, o, unhex(p)) for k, q, o, p in s["frames"]]
assert got == want, got
assert reader.errors == s["errors"], reader.errors
n += 1
print("OK", n)
