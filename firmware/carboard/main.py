"""Elevator car board: door contact, levelling (door zone) sensor, car height (barometric, trimmed by the
levelling sensor at each floor), speed (from the accelerometer), load, person presence (mmWave), alarm button
and mains power, streamed to the gateway every ``period_ms`` as a sensor event over the serial frame protocol
(RS-485 in the field). Answers ping, info and a watchdog kick like every board.

Event payload (JSON, ≤ 120 bytes): {"n": seq, "z": door zone 0/1, "d": door open 0/1, "h": height cm,
"v": speed cm/s (signed, up positive), "l": load kg, "p": person 0/1, "a": alarm button 0/1, "w": mains 0/1}

Run under the unix port: ``micropython main.py <uart path> <state dir>`` (sensors.json is the car's state).
"""

import json
import sys

import hal
import serial_frame as sf

DEFAULTS = {"name": "carboard", "version": "1.0", "period_ms": 100}


class CarBoard:
    def __init__(self, cfg, uart, sensors):
        self.cfg, self.uart, self.sensors = cfg, uart, sensors
        self.reader = sf.FrameReader()
        self.seq = 0
        self.n = 0
        self.next_ms = hal.ticks_ms()

    def _send(self, kind, seq, op, payload=b""):
        self.uart.write(sf.encode_frame(kind, seq, op, payload))

    def handle(self, seq, op, payload):
        if op == sf.OP_PING:
            self._send(sf.KIND_RSP, seq, op, payload)
        elif op == sf.OP_INFO:
            self._send(sf.KIND_RSP, seq, op, (self.cfg["name"] + " " + self.cfg["version"]).encode())
        elif op in (sf.OP_WATCHDOG_KICK, sf.OP_WATCHDOG_CONFIG):
            self._send(sf.KIND_RSP, seq, op)
        else:
            self._send(sf.KIND_NAK, seq, op, bytes([sf.NAK_BAD_OP]))

    def sample(self):
        s = self.sensors.read()
        self.n += 1
        rec = {
            "n": self.n,
            "z": 1 if s.get("zone") else 0,
            "d": 1 if s.get("door") else 0,
            "h": int(s.get("height_cm", 0)),
            "v": int(s.get("speed_cms", 0)),
            "l": int(s.get("load_kg", 0)),
            "p": 1 if s.get("person") else 0,
            "a": 1 if s.get("alarm") else 0,
            "w": 0 if s.get("power") == 0 else 1,
        }
        self.seq = (self.seq + 1) & 0xFF
        self._send(sf.KIND_EVT, self.seq, sf.OP_SENSOR_EVENT, json.dumps(rec).encode())

    def run(self, wdt):
        period = self.cfg["period_ms"]
        while True:
            data = self.uart.read(5)
            if data:
                for kind, seq, op, payload in self.reader.feed(data):
                    if kind == sf.KIND_REQ:
                        self.handle(seq, op, payload)
            if hal.ticks_diff(hal.ticks_ms(), self.next_ms) >= 0:
                self.next_ms = hal.ticks_add(self.next_ms, period)
                self.sample()
            wdt.feed()


def main(argv):
    if hal.UNIX:
        uart_path, state = argv[1], argv[2]
        cfg = hal.load_config(state + "/config.json", DEFAULTS)
        uart = hal.UnixUart(uart_path)
        sensors = hal.UnixSensors(state + "/inputs.json")
        hal.UnixPins(0, 0, state + "/inputs.json", state + "/outputs.json")  # writes outputs.json: "started"
    else:
        cfg = hal.load_config("config.json", DEFAULTS)
        raise SystemExit("car board: the drivers for a real car's sensors are not written yet (docs/firmware.md)")
    CarBoard(cfg, uart, sensors).run(hal.Watchdog(5000))


main(sys.argv)
