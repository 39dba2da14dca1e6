"""The manhole node firmware under MicroPython, its LIS3DH driver on the simulated I2C bus, talking MQTT to a
real Mosquitto: readings that the cloud's codec accepts, a tilt alarm at once with hysteresis, flood and gas."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from protocol.codec import decode
from protocol.messages import ManholeAlarm, ManholeReading
from simulators.firmware import FirmwareBoard
from simulators.services import Mosquitto


def tilted(deg: float) -> dict[str, Any]:
    r = math.radians(deg)
    return {"ax_mg": 0, "ay_mg": round(1000 * math.sin(r)), "az_mg": round(1000 * math.cos(r)),
            "water_mv": 100, "gas_mv": 50, "battery_mv": 1900}


@pytest.fixture
def node(micropython: Any, mosquitto: Mosquitto) -> Iterator[tuple[FirmwareBoard, list[tuple[str, Any]]]]:
    got: list[tuple[str, Any]] = []

    def on_message(_c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        if m.topic.endswith("/state"):
            return
        env = decode(bytes(m.payload), m.topic)  # exactly what ingestion does: schema, topic, device
        got.append((m.topic, env.body))

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cloud-sub")
    c.on_message = on_message
    c.connect(mosquitto.host, mosquitto.port)
    c.subscribe("ce/v1/riverside/mh-0042/#", qos=1)
    c.loop_start()
    time.sleep(0.2)
    board = FirmwareBoard(
        "manhole",
        {"device": "mh-0042", "broker_host": mosquitto.host, "broker_port": mosquitto.port,
         "sample_s": 0.2, "heartbeat_s": 1.0},
        sensors=tilted(0.0),
    )
    yield board, got
    board.close()
    c.loop_stop()
    c.disconnect()


def wait(got: list[tuple[str, Any]], pred: Any, timeout: float = 5.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = [b for _t, b in got if pred(b)]
        if hits:
            return hits
        time.sleep(0.02)
    raise AssertionError(f"nothing matching within {timeout} s; got {got[-5:]}")


def test_readings_decode_with_the_protocol(node: Any) -> None:
    board, got = node
    (r, *_) = wait(got, lambda b: isinstance(b, ManholeReading))
    assert r.tilt_deg < 0.5 and r.water_level_cm == pytest.approx(10.0) and r.gas_lel == pytest.approx(1.0)
    assert r.battery_v == pytest.approx(3.8)


def test_tilt_alarm_with_hysteresis(node: Any) -> None:
    board, got = node
    wait(got, lambda b: isinstance(b, ManholeReading))
    board.set_sensors({**tilted(7.0), "int1": 1})  # lifted: the accelerometer's interrupt wakes the node
    (alarm,) = wait(got, lambda b: isinstance(b, ManholeAlarm) and b.kind == "tilt")
    assert alarm.active and alarm.value == pytest.approx(7.0, abs=0.3) and alarm.threshold == 5.0
    for deg in (4.0, 6.0, 4.0, 6.0):  # rocking between the clear and raise thresholds: still one alarm
        board.set_sensors({**tilted(deg), "int1": 0})
        time.sleep(0.35)
    assert [b.active for _t, b in got if isinstance(b, ManholeAlarm)] == [True]
    board.set_sensors(tilted(1.0))  # put back
    cleared = wait(got, lambda b: isinstance(b, ManholeAlarm) and not b.active)
    assert cleared[0].kind == "tilt"


def test_flood_and_gas(node: Any) -> None:
    board, got = node
    board.set_sensors({**tilted(0.0), "water_mv": 650, "gas_mv": 800})
    kinds = {b.kind for b in wait(got, lambda b: isinstance(b, ManholeAlarm) and b.active, 3)}
    deadline = time.monotonic() + 3
    while kinds != {"flood", "gas"} and time.monotonic() < deadline:
        kinds = {b.kind for _t, b in got if isinstance(b, ManholeAlarm) and b.active}
        time.sleep(0.05)
    assert kinds == {"flood", "gas"}
