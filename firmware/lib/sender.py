"""Store and forward for a board that talks MQTT itself: every message goes into the ring file first, and the
ring is drained in order, one QoS 1 publish at a time (the next only after the broker's PUBACK), whenever the
link is up. A reading taken while the link is down simply waits its turn; nothing is sent out of order and
nothing is dropped unless the ring overflows (the oldest go first, counted)."""

import hal
from mqtt import MQTTClient, MQTTError


class Sender:
    def __init__(self, client, ring, backoff_ms=(500, 30000), birth=None):
        """``birth``: a function returning ``(topic, payload)``, published retained (QoS 1) at every connection
        before the ring moves on: the node's "online" state, the counterpart of its last will."""
        self.client = client
        self.ring = ring
        self.birth = birth
        self.backoff_min, self.backoff_max = backoff_ms
        self._backoff = self.backoff_min
        self._next_try = hal.ticks_ms()
        self._inflight = None  # (packet id, record) being sent
        self.sent = 0
        self.reconnects = 0

    def send(self, topic, payload):
        if isinstance(payload, str):
            payload = payload.encode()
        self.ring.push(topic.encode() + b"\n" + payload)

    def service(self, wait_ms=0):
        """Call often: keeps the link up, moves the ring forward; returns messages still queued."""
        c = self.client
        if not c.connected:
            if hal.ticks_diff(hal.ticks_ms(), self._next_try) < 0:
                return len(self.ring)
            try:
                c.connect()
                self.reconnects += 1
                self._backoff = self.backoff_min
            except (OSError, MQTTError):
                c.close()
                self._next_try = hal.ticks_add(hal.ticks_ms(), self._backoff)
                self._backoff = min(self._backoff * 2, self.backoff_max)
                return len(self.ring)
            self._inflight = None  # whatever was in flight is resent from the ring
            if self.birth is not None:
                try:
                    topic, payload = self.birth()
                    self._inflight = (c.publish(topic, payload, qos=1, retain=True), None)
                except (OSError, MQTTError):
                    c.close()
                    return len(self.ring)
        try:
            c.poll(wait_ms)
            if self._inflight is not None and c.pending() == 0:
                if self._inflight[1] is not None:  # the ring's head (not the birth message) is delivered
                    self.ring.pop()
                    self.sent += 1
                self._inflight = None
            if self._inflight is None and len(self.ring):
                rec = self.ring.peek()
                topic, payload = rec.split(b"\n", 1)
                c._inflight.clear()  # only the ring's head is ever in flight
                self._inflight = (c.publish(topic.decode(), payload, qos=1), rec)
        except (OSError, MQTTError):
            c.close()
            self._inflight = None
            self._next_try = hal.ticks_add(hal.ticks_ms(), self._backoff)
        return len(self.ring)


__all__ = ["MQTTClient", "Sender"]
