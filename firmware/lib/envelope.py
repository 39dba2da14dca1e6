"""Protocol envelopes built on the board: ``{"v":1,"id":<ULID>,"dev":…,"seq":…,"ts":…,"type":…,"body":…}``
(the same shape ``protocol/envelope.py`` defines and the cloud validates)."""

import json
import os
import time

_B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def now_ms():
    return int(time.time() * 1000)


def ulid(ms=None):
    """48-bit millisecond time + 80 random bits, Crockford base32, 26 characters."""
    t = now_ms() if ms is None else ms
    r = int.from_bytes(os.urandom(10), "big")
    n = (t << 80) | r
    out = []
    for _ in range(26):
        out.append(_B32[n & 31])
        n >>= 5
    return "".join(reversed(out))


class Envelopes:
    def __init__(self, site, device):
        self.site, self.device = site, device
        self.seq = 0

    def topic(self, channel):
        return "ce/v1/" + self.site + "/" + self.device + "/" + channel

    def make(self, type_, body):
        self.seq += 1
        ts = now_ms()
        return json.dumps(
            {"v": 1, "id": ulid(ts), "dev": self.device, "seq": self.seq, "ts": ts, "type": type_, "body": body}
        )
