"""Manhole-cover sensor node: tilt / displacement / overturn (LIS3DH), water level (pressure sensor on an
ADC), combustible gas (ADC), battery. Wakes every ``sample_s`` (or at once when the accelerometer's motion
interrupt fires), raises an alarm immediately on a threshold crossing — with hysteresis, so a cover rocking
around the threshold is one alarm, not a storm — and sends a reading every ``heartbeat_s`` (twice as rarely on
a low battery). Everything goes through the store-and-forward ring, straight to the broker over MQTT.

Pins (ESP32): LIS3DH on I2C0 (SCL 22, SDA 21, INT1 → 33 for wake-up), water pressure sensor ADC 34, gas
sensor ADC 35, battery divider ADC 36; state files under ``/data``.
Under the unix port: ``micropython main.py <unused> <state dir>``; sensors come from ``inputs.json``.
"""

import json
import math
import sys

import hal
import simbus
import envelope
from envelope import Envelopes
from lis3dh import LIS3DH
from mqtt import MQTTClient
from ringfile import RingFile
from sender import Sender

DEFAULTS = {
    "site": "riverside",
    "device": "mh-0001",
    "broker_host": "127.0.0.1",
    "broker_port": 1883,
    "sample_s": 60,
    "heartbeat_s": 900,
    "tilt_deg": 5.0,
    "tilt_clear_deg": 3.0,
    "overturn_deg": 60.0,
    "water_cm": 50.0,
    "water_clear_cm": 40.0,
    "gas_lel": 10.0,
    "gas_clear_lel": 5.0,
    "battery_low_v": 3.4,
    "battery_ok_v": 3.6,
    "water_cm_per_mv": 0.1,
    "gas_lel_per_mv": 0.02,
    "battery_divider": 2.0,
    "flush_ms": 2000,
    "keepalive_s": 30,
}
ALARMS = (
    # kind, reading, raise at, clear at (below), alarm when above
    ("tilt", "tilt_deg", "tilt_deg", "tilt_clear_deg", True),
    ("overturn", "tilt_deg", "overturn_deg", "tilt_deg", True),
    ("flood", "water_level_cm", "water_cm", "water_clear_cm", True),
    ("gas", "gas_lel", "gas_lel", "gas_clear_lel", True),
    ("battery_low", "battery_v", "battery_low_v", "battery_ok_v", False),
)


def angle_deg(a, b):
    dot = a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
    na = math.sqrt(a[0] ** 2 + a[1] ** 2 + a[2] ** 2)
    nb = math.sqrt(b[0] ** 2 + b[1] ** 2 + b[2] ** 2)
    if na == 0 or nb == 0:
        return 0.0
    return math.degrees(math.acos(max(-1.0, min(1.0, dot / (na * nb)))))


class Node:
    def __init__(self, cfg, accel, adcs, sender, env, state_dir):
        self.cfg, self.accel, self.adcs, self.sender, self.env = cfg, accel, adcs, sender, env
        self.state_path = state_dir + "/node.json"  # survives deep sleep (a board wakes through a reset)
        self.active, self.last_heartbeat = {}, None
        try:
            with open(self.state_path) as f:
                st = json.load(f)
            self.active, self.last_heartbeat = st["active"], st["heartbeat_ms"]
        except (OSError, ValueError, KeyError):
            pass
        self.baseline_path = state_dir + "/baseline.json"
        try:
            with open(self.baseline_path) as f:
                self.baseline = json.load(f)["g"]
        except (OSError, ValueError, KeyError):
            self.baseline = accel.read_g()  # installed level: this is "upright"
            with open(self.baseline_path, "w") as f:
                json.dump({"g": self.baseline}, f)
        accel.motion_interrupt()

    def read(self):
        c = self.cfg
        g = self.accel.read_g()
        return {
            "tilt_deg": round(angle_deg(g, self.baseline), 2),
            "water_level_cm": round(self.adcs["water"].read_uv() / 1000 * c["water_cm_per_mv"], 1),
            "gas_lel": round(self.adcs["gas"].read_uv() / 1000 * c["gas_lel_per_mv"], 2),
            "battery_v": round(self.adcs["battery"].read_uv() / 1e6 * c["battery_divider"], 3),
        }

    def check_alarms(self, r):
        c = self.cfg
        for kind, key, raise_key, clear_key, above in ALARMS:
            v, on, off = r[key], c[raise_key], c[clear_key]
            was = self.active.get(kind, False)
            now = (v > on if above else v < on) if not was else (v >= off if above else v <= off)
            if now != was:
                self.active[kind] = now
                body = {"kind": kind, "active": now, "value": v, "threshold": on}
                self.sender.send(self.env.topic("alm"), self.env.make("manhole.alarm", body))
                self._save()

    def _save(self):
        with open(self.state_path, "w") as f:
            json.dump({"active": self.active, "heartbeat_ms": self.last_heartbeat}, f)

    def heartbeat_due(self, now):
        period = self.cfg["heartbeat_s"] * 1000
        if self.active.get("battery_low"):
            period *= 2  # battery-aware: report half as often
        return self.last_heartbeat is None or now - self.last_heartbeat >= period

    def cycle(self):
        r = self.read()
        self.check_alarms(r)
        now = envelope.now_ms()  # wall time: ticks restart with every wake from deep sleep
        if self.heartbeat_due(now):
            self.last_heartbeat = now
            self.sender.send(self.env.topic("tele"), self.env.make("manhole.reading", r))
            self._save()
        return r


class BoardADC:
    def __init__(self, pin):
        from machine import ADC, Pin

        self._adc = ADC(Pin(pin))
        self._adc.atten(ADC.ATTN_11DB)

    def read_uv(self):
        return self._adc.read_uv()


def board_sleep(ms):
    """Deep sleep; the LIS3DH's INT1 (pin 33) wakes the board early. The board resets on waking."""
    import esp32
    import machine

    esp32.wake_on_ext0(machine.Pin(33, machine.Pin.IN), esp32.WAKEUP_ANY_HIGH)
    machine.deepsleep(ms)


def main(argv):
    if hal.UNIX:
        state = argv[2]
        cfg = hal.load_config(state + "/config.json", DEFAULTS)
        sensors = hal.UnixSensors(state + "/inputs.json", period_ms=5)
        hal.UnixPins(0, 0, state + "/inputs.json", state + "/outputs.json")  # outputs.json says "started"
        accel = LIS3DH(simbus.SimI2C(sensors))
        adcs = {k: simbus.SimADC(sensors, k + "_mv") for k in ("water", "gas", "battery")}

        def sleep(ms):
            if simbus.deep_sleep(sensors, ms):
                accel.interrupt_source()
    else:
        from machine import I2C, Pin

        state = "/data"
        cfg = hal.load_config("config.json", DEFAULTS)
        accel = LIS3DH(I2C(0, scl=Pin(22), sda=Pin(21), freq=400000))
        adcs = {"water": BoardADC(34), "gas": BoardADC(35), "battery": BoardADC(36)}
        sleep = board_sleep
    client = MQTTClient(
        cfg["device"],
        cfg["broker_host"],
        cfg["broker_port"],
        user=cfg.get("mqtt_user"),  # written by tools/flash.py provision
        password=cfg.get("mqtt_password"),
        keepalive=int(cfg["keepalive_s"]),
        ca=cfg.get("mqtt_ca"),  # the project CA (PEM): TLS to the broker's TLS listener, its certificate checked
        server_hostname=cfg.get("broker_name"),
    )
    env = Envelopes(cfg["site"], cfg["device"])
    # a fresh envelope (id, seq, time) at every connection: a will with a fixed id would be stored once, ever
    client.set_last_will(env.topic("state"), lambda: env.make("state", {"status": "offline"}), retain=True)
    sender = Sender(
        client,
        RingFile(state + "/ring", slots=128, slot=400),
        backoff_ms=(200, 2000),
        birth=lambda: (env.topic("state"), env.make("state", {"status": "online"})),
    )
    node = Node(cfg, accel, adcs, sender, env, state)
    while True:
        node.cycle()
        deadline = hal.ticks_add(hal.ticks_ms(), cfg["flush_ms"])
        while len(sender.ring) and hal.ticks_diff(deadline, hal.ticks_ms()) > 0:
            sender.service(5)  # a board powers the radio only for this
        sleep(int(cfg["sample_s"] * 1000))


main(sys.argv)
