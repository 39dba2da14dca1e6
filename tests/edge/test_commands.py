"""Signed commands through a real broker: accepted, replayed, expired, forged, unknown, set-config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from edge.agent import Agent
from protocol import encode, envelope, now_ms, sign_command, topic
from protocol.messages import Command
from protocol.signing import generate_key, public_key_b64
from simulators.services import Mosquitto
from tests.conftest import RunAgent
from tests.mqtt_helpers import Collector

KEY = generate_key()
SITE, DEV = "riverside", "gate-01"


async def send(broker: Mosquitto, cmd: Command, device: str = DEV, name: str | None = None) -> None:
    payload = encode(envelope(cmd, dev=device, seq=0))
    async with aiomqtt.Client(broker.host, broker.port) as c:
        await c.publish(topic(SITE, device, "cmd", name or cmd.name), payload, qos=1)


async def ack_for(col: Collector, cid: str, n: int = 1) -> list[Any]:
    await col.wait_for(lambda c: len([e for e in c.of_type("command.ack") if e.body.cid == cid]) >= n)  # type: ignore[attr-defined]
    return [e.body for e in col.of_type("command.ack") if e.body.cid == cid]  # type: ignore[attr-defined]


@pytest.fixture
async def agent(run_agent: RunAgent) -> Agent:
    a: Agent = await run_agent(public_key=public_key_b64(KEY))
    assert a.uplink is not None
    await a.uplink.connected.wait()
    return a


async def test_accepted_then_replay_refused(mosquitto: Mosquitto, agent: Agent) -> None:
    cmd = sign_command(KEY, device=DEV, name="ping")
    async with Collector(mosquitto.host, mosquitto.port, filt="ce/v1/+/+/ack") as col:
        await send(mosquitto, cmd)
        (ok,) = await ack_for(col, cmd.cid)
        assert ok.status == "ok" and ok.result["pong"] is True
        await send(mosquitto, cmd)
        acks = await ack_for(col, cmd.cid, 2)
    assert acks[1].status == "refused" and acks[1].reason.startswith("replayed")
    assert agent.commands.counters == {"ok": 1, "refused_replayed": 1}


async def test_expired_refused(mosquitto: Mosquitto, agent: Agent) -> None:
    cmd = sign_command(KEY, device=DEV, name="ping", deadline_ms=now_ms() - 1000)
    async with Collector(mosquitto.host, mosquitto.port, filt="ce/v1/+/+/ack") as col:
        await send(mosquitto, cmd)
        (ack,) = await ack_for(col, cmd.cid)
    assert ack.status == "refused" and ack.reason.startswith("expired")


async def test_bad_signature_refused(mosquitto: Mosquitto, agent: Agent) -> None:
    forged = sign_command(generate_key(), device=DEV, name="reboot-agent")
    other_device = sign_command(KEY, device="gate-02", name="ping")
    async with Collector(mosquitto.host, mosquitto.port, filt="ce/v1/+/+/ack") as col:
        await send(mosquitto, forged)
        await send(mosquitto, other_device)  # signed for gate-02, sent to gate-01
        (a1,) = await ack_for(col, forged.cid)
        (a2,) = await ack_for(col, other_device.cid)
    assert a1.status == a2.status == "refused"
    assert a1.reason.startswith("bad_signature") and a2.reason.startswith("bad_signature")
    assert not agent._stop.is_set()  # the forged reboot did nothing


async def test_unknown_command_gets_error_ack(mosquitto: Mosquitto, agent: Agent) -> None:
    cmd = sign_command(KEY, device=DEV, name="teleport")
    async with Collector(mosquitto.host, mosquitto.port, filt="ce/v1/+/+/ack") as col:
        await send(mosquitto, cmd)
        (ack,) = await ack_for(col, cmd.cid)
    assert ack.status == "error" and ack.reason.startswith("unknown_command")


async def test_outbox_stats(mosquitto: Mosquitto, agent: Agent) -> None:
    cmd = sign_command(KEY, device=DEV, name="outbox-stats")
    async with Collector(mosquitto.host, mosquitto.port, filt="ce/v1/+/+/ack") as col:
        await send(mosquitto, cmd)
        (ack,) = await ack_for(col, cmd.cid)
    assert ack.status == "ok" and set(ack.result["depth"]) >= {"alarm", "event", "telemetry", "bulk"}
    assert ack.result["published"] >= 1


async def test_set_config_applies_or_rejects_atomically(
    tmp_path: Path, mosquitto: Mosquitto, run_agent: RunAgent
) -> None:
    a: Agent = await run_agent(public_key=public_key_b64(KEY))
    cfg_path = tmp_path / "agent.yaml"
    cfg_path.write_text(yaml.safe_dump(a.raw))
    a.config_path = cfg_path
    assert a.uplink is not None
    await a.uplink.connected.wait()
    good = sign_command(KEY, device=DEV, name="set-config", args={"config": {"health": {"interval_s": 5}}})
    bad = sign_command(KEY, device=DEV, name="set-config", args={"config": {"health": {"interval_s": -1}}})
    # an operator's patch that would paste one of the device's secrets into a value it controls
    leak = sign_command(KEY, device=DEV, name="set-config", args={"config": {"log_level": "${CE_DEVICE_SECRET}"}})
    # a patch sending the device to another broker would hand it the password the file references
    away = sign_command(KEY, device=DEV, name="set-config", args={"config": {"mqtt": {"host": "broker.evil.example"}}})
    async with Collector(mosquitto.host, mosquitto.port, filt="ce/v1/+/+/ack") as col:
        await send(mosquitto, good)
        (ok,) = await ack_for(col, good.cid)
        await send(mosquitto, bad)
        (no,) = await ack_for(col, bad.cid)
        await send(mosquitto, leak)
        (leaked,) = await ack_for(col, leak.cid)
        await send(mosquitto, away)
        (moved,) = await ack_for(col, away.cid)
    assert leaked.status == "error" and "environment" in leaked.reason
    assert moved.status == "error" and "mqtt.host" in moved.reason
    assert ok.status == "ok" and ok.result == {"applied": True, "restart": False}
    assert a.config.health.interval_s == 5
    assert yaml.safe_load(cfg_path.read_text())["health"]["interval_s"] == 5
    assert no.status == "error" and "health.interval_s" in no.reason
    assert a.config.health.interval_s == 5  # unchanged by the rejected one


async def test_malformed_command_is_counted_not_fatal(mosquitto: Mosquitto, agent: Agent) -> None:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as c:
        await c.publish(topic(SITE, DEV, "cmd", "ping"), b'{"v":1,"type":"command"}', qos=1)
    cmd = sign_command(KEY, device=DEV, name="ping")
    async with Collector(mosquitto.host, mosquitto.port, filt="ce/v1/+/+/ack") as col:
        await send(mosquitto, cmd)
        (ack,) = await ack_for(col, cmd.cid)
    assert ack.status == "ok"
    assert agent.commands.counters.get("rejected_schema") == 1
