"""The boards' own MQTT client and store-and-forward, running under the MicroPython unix port against a real
Mosquitto: readings taken while the broker is down are kept in the ring file and arrive, in order, after it is
back; the last will is published when a node dies."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from simulators.firmware import FIRMWARE
from simulators.services import Mosquitto

HERE = Path(__file__).resolve().parent


def collector(broker: Mosquitto, topic: str) -> tuple[mqtt.Client, list[bytes]]:
    got: list[bytes] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="collector", clean_session=False)
    c.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
    c.on_connect = lambda cl, *_a: cl.subscribe(topic, qos=1)
    c.reconnect_delay_set(1, 2)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c, got


def node(micropython: Path, broker: Mosquitto, state: Path, n: int) -> subprocess.Popen[str]:
    env = {**os.environ, "MICROPYPATH": f"{FIRMWARE / 'lib'}"}
    return subprocess.Popen(
        [str(micropython), str(HERE / "mp_node.py"), broker.host, str(broker.port), str(state), str(n)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )


def test_offline_readings_are_kept_and_sent_in_order_after_reconnect(
    micropython: Path, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    c, got = collector(mosquitto, "ce/v1/riverside/node-7/tele")
    time.sleep(0.3)  # the collector's subscription is in place (its session persists across the restart)
    proc = node(micropython, mosquitto, tmp_path, 60)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # wait until some readings went out live
        lines.append(line)
        if line.startswith("reading 10 "):
            break
    mosquitto.stop()
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("reading 30 "):
            break
    mosquitto.start()
    rest, _ = proc.communicate(timeout=60)
    lines += rest.splitlines(keepends=True)
    assert proc.returncode == 0, "".join(lines)
    assert any("offline" in ln for ln in lines), "some readings must have been taken with the broker down"
    deadline = time.monotonic() + 15
    while len(got) < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    c.loop_stop()
    c.disconnect()
    numbers = [int(g.decode().split(":")[1].rstrip("}")) for g in got]
    assert sorted(set(numbers)) == list(range(60)), f"missing: {sorted(set(range(60)) - set(numbers))}"
    assert numbers == sorted(numbers), "out of order"
    assert "dropped 0" in lines[-1]


def test_last_will_when_a_node_dies(micropython: Path, mosquitto: Mosquitto, tmp_path: Path) -> None:
    c, got = collector(mosquitto, "ce/v1/riverside/node-7/state")
    time.sleep(0.3)
    proc = node(micropython, mosquitto, tmp_path, 1000)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "connected" in line and "reading 3 " in line:
            break
    proc.kill()  # power gone: no DISCONNECT, the broker publishes the will after the keepalive lapses
    proc.wait()
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        time.sleep(0.1)
    c.loop_stop()
    c.disconnect()
    assert got == [b'{"status":"offline"}']
