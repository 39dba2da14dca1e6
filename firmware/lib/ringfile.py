"""Readings taken while offline, kept in a ring file on flash and sent in order when the link is back.

Fixed-size records (``slot`` bytes: 2-byte length + data, zero padded) in a file of ``slots`` records; a small
head/tail index file is rewritten after every change, so a reset loses at most the record being written. When
full, the oldest record is overwritten (and counted), newest data wins.
"""

import json


class RingFile:
    def __init__(self, path, slots=256, slot=256):
        self.path, self.slots, self.slot = path, slots, slot
        self.meta = path + ".idx"
        self.head, self.count, self.dropped = 0, 0, 0
        try:
            with open(self.meta) as f:
                m = json.load(f)
            self.head, self.count, self.dropped = m["head"], m["count"], m.get("dropped", 0)
        except (OSError, ValueError, KeyError):
            pass
        try:
            with open(path, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
        except OSError:
            size = -1
        if size != slots * slot:
            with open(path, "wb") as f:
                zero = bytes(slot)
                for _ in range(slots):
                    f.write(zero)
            self.head, self.count = 0, 0

    def _save(self):
        tmp = self.meta + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"head": self.head, "count": self.count, "dropped": self.dropped}, f)
        import os

        os.rename(tmp, self.meta)

    def __len__(self):
        return self.count

    def push(self, data):
        if len(data) > self.slot - 2:
            raise ValueError("record larger than a slot")
        idx = (self.head + self.count) % self.slots
        if self.count == self.slots:  # full: the oldest goes
            self.head = (self.head + 1) % self.slots
            self.dropped += 1
        else:
            self.count += 1
        with open(self.path, "r+b") as f:
            f.seek(idx * self.slot)
            f.write(bytes((len(data) >> 8, len(data) & 0xFF)) + data)
        self._save()

    def peek(self):
        if not self.count:
            return None
        with open(self.path, "rb") as f:
            f.seek(self.head * self.slot)
            rec = f.read(self.slot)
        n = (rec[0] << 8) | rec[1]
        return rec[2 : 2 + n]

    def pop(self):
        if self.count:
            self.head = (self.head + 1) % self.slots
            self.count -= 1
            self._save()
