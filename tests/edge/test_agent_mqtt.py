"""The agent against a real Mosquitto: offline buffering, broker restarts, kill -9, and the uplink contract."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiomqtt

from edge.agent import Agent
from protocol import Envelope, Lane
from protocol.messages import AlarmRaise, DeviceEvent
from simulators.fleet import AgentProcess, agent_config, write_config
from simulators.services import Mosquitto
from tests.conftest import RunAgent
from tests.mqtt_helpers import Collector


def lane_seqs(msgs: list[tuple[str, Envelope]], lane: Lane) -> list[int]:
    return [e.seq for _t, e in msgs if e.type != "state" and e.lane is lane]


async def test_offline_buffering_delivers_everything_in_order_per_lane(
    mosquitto: Mosquitto, run_agent: RunAgent
) -> None:
    mosquitto.stop()
    agent: Agent = await run_agent()
    ob = agent.outbox
    for i in range(30):
        await ob.put(DeviceEvent(code="tick", details={"n": i}))
        await ob.put_reading("level", float(i), ts=1000 + i)
        if i % 10 == 0:
            await ob.put(AlarmRaise(key=f"k{i}", code="flood", severity="major", message="water"))
    assert ob.depth()["event"] >= 30 and agent.uplink is not None and not agent.uplink.connected.is_set()
    mosquitto.start()
    async with Collector(mosquitto.host, mosquitto.port) as col:
        await col.wait_for(
            lambda c: (
                len(c.events("tick")) >= 30
                and len(c.of_type("alarm.raise")) >= 3
                and sum(len(e.body.readings) for e in c.of_type("telemetry")) >= 30
            )
        )  # type: ignore[attr-defined]
    ticks = [e.body.details["n"] for e in col.events("tick")]  # type: ignore[attr-defined]
    assert ticks == list(range(30))
    for lane in (Lane.ALARM, Lane.EVENT, Lane.TELEMETRY):
        seqs = lane_seqs(col.messages, lane)
        assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)), lane
    readings = [r["value"] for e in col.of_type("telemetry") for r in e.body.readings]  # type: ignore[attr-defined]
    assert readings == [float(i) for i in range(30)]
    # the backlog went out as few batched messages, not one message per reading
    assert len(col.of_type("telemetry")) < 5
    assert col.of_type("state")[-1].body.status == "online"  # type: ignore[attr-defined]


async def test_broker_restart_mid_stream_loses_nothing(mosquitto: Mosquitto, run_agent: RunAgent) -> None:
    async with Collector(mosquitto.host, mosquitto.port) as col:
        await run_agent(units=[{"type": "ticker", "rate_per_s": 300, "burst": 3, "limit": 600}])
        for restart_at in (150, 350):
            await col.wait_for(lambda c, n=restart_at: len(c.events("tick")) >= n)
            mosquitto.restart()
        await col.wait_for(lambda c: len({e.seq for e in c.events("tick")}) >= 600, timeout=60)
    seqs = {e.seq for e in col.events("tick")}
    started = [e.seq for e in col.events("agent.started")]
    assert seqs | set(started) >= set(range(1, 602))


async def test_kill_between_puback_and_delete_gives_duplicate_not_loss(tmp_path: Path, mosquitto: Mosquitto) -> None:
    doc = agent_config(
        tmp_path,
        host=mosquitto.host,
        port=mosquitto.port,
        units=[{"type": "ticker", "rate_per_s": 400, "burst": 4, "limit": 200}],
    )
    proc = AgentProcess(write_config(tmp_path / "agent.yaml", doc))
    async with Collector(mosquitto.host, mosquitto.port) as col:
        proc.start({"CE_FAULT_EXIT_AFTER_PUBACKS": "40"})
        code = await asyncio.to_thread(proc.wait, 30)
        assert code == 137, proc.log()
        # the broker acknowledged 40 publishes, so 40 messages reach the subscriber
        await col.wait_for(lambda c: len([1 for t, _p in c.raw if not t.endswith("/state")]) >= 40)
        # the ticker starts over on restart (limit counts per run); the outbox resends what was not deleted
        proc.start()
        try:
            await col.wait_for(lambda c: len(c.events("agent.started")) >= 2 and len(c.events("tick")) >= 240)
        finally:
            assert proc.stop() == 0, proc.log()
    ids = [e.id for _t, e in col.messages if e.type != "state"]
    assert len(ids) > len(set(ids)), f"the message acked but not deleted must be sent again\n{proc.log()[-3000:]}"
    # every event-lane seq committed before the kill arrived
    seqs = sorted({e.seq for _t, e in col.messages if e.type == "event"})
    missing = sorted(set(range(1, seqs[-1] + 1)) - set(seqs))
    assert not missing, f"event seqs missing: {missing[:20]}\n{proc.log()[-3000:]}"


async def test_graceful_stop_says_offline_and_flushes(tmp_path: Path, mosquitto: Mosquitto) -> None:
    doc = agent_config(tmp_path, host=mosquitto.host, port=mosquitto.port)
    proc = AgentProcess(write_config(tmp_path / "agent.yaml", doc))
    async with Collector(mosquitto.host, mosquitto.port) as col:
        proc.start()
        await col.wait_for(lambda c: c.events("agent.started"))
        assert await asyncio.to_thread(proc.stop) == 0
        await col.wait_for(lambda c: c.events("agent.stopping") and c.of_type("state")[-1].body.status == "offline")


async def test_last_will_marks_a_killed_agent_offline(tmp_path: Path, mosquitto: Mosquitto) -> None:
    doc = agent_config(tmp_path, host=mosquitto.host, port=mosquitto.port, mqtt={"keepalive_s": 5})
    proc = AgentProcess(write_config(tmp_path / "agent.yaml", doc))
    async with Collector(mosquitto.host, mosquitto.port, filt="ce/v1/+/+/state") as col:
        proc.start()
        await col.wait_for(lambda c: c.of_type("state") and c.of_type("state")[-1].body.status == "online")
        proc.kill()
        await col.wait_for(lambda c: c.of_type("state")[-1].body.status == "offline")


async def test_unknown_inbound_topics_do_not_crash(mosquitto: Mosquitto, run_agent: RunAgent) -> None:
    agent = await run_agent()
    assert agent.uplink is not None
    await asyncio.wait_for(agent.uplink.connected.wait(), 10)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as c:
        await c.publish("ce/v1/riverside/gate-01/gallery", b"not json", qos=1)
        await c.publish("ce/v1/riverside/gate-01/cmd/ping", b"\xff\xfe", qos=1)
        await c.publish("ce/v1/riverside/gate-01/cfg", b"{}", qos=1)
    async with Collector(mosquitto.host, mosquitto.port) as col:
        await col.wait_for(lambda c: c.events("config.rejected"))
    assert agent.uplink.unhandled.get("gallery") == 1
    assert agent.commands.counters.get("rejected_malformed_json") == 1
    assert sys.exc_info() == (None, None, None)


async def test_live_alarm_overtakes_a_paced_backlog(mosquitto: Mosquitto, run_agent: RunAgent) -> None:
    mosquitto.stop()
    agent: Agent = await run_agent(mqtt={"drain_rate_per_s": 50})
    await asyncio.gather(*(agent.outbox.put(DeviceEvent(code="tick", details={"n": i})) for i in range(300)))
    mosquitto.start()
    async with Collector(mosquitto.host, mosquitto.port) as col:
        await col.wait_for(lambda c: len(c.events("tick")) >= 10)
        await agent.outbox.put(AlarmRaise(key="gas:1", code="gas", severity="critical", message="gas 30 %LEL"))
        await col.wait_for(lambda c: c.of_type("alarm.raise"))
        ticks_when_alarm_arrived = len(col.events("tick"))
    # paced at 50/s the backlog takes ~6 s; the alarm went out at once, ahead of it
    assert ticks_when_alarm_arrived < 150


async def test_resubscribes_after_broker_restart(mosquitto: Mosquitto, run_agent: RunAgent) -> None:
    from protocol import encode, envelope, sign_command, topic
    from protocol.signing import generate_key, public_key_b64

    key = generate_key()
    agent: Agent = await run_agent(public_key=public_key_b64(key))
    assert agent.uplink is not None
    await agent.uplink.connected.wait()
    mosquitto.restart()
    async with Collector(mosquitto.host, mosquitto.port, filt="ce/v1/+/+/ack") as col:
        async with asyncio.timeout(20):  # agent state, not a message: poll it
            while agent.uplink.connects < 2 or not agent.uplink.connected.is_set():
                await asyncio.sleep(0.02)
        cmd = sign_command(key, device="gate-01", name="ping")
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as c:
            await c.publish(
                topic("riverside", "gate-01", "cmd", "ping"), encode(envelope(cmd, dev="gate-01", seq=0)), qos=1
            )
        await col.wait_for(lambda c: any(e.body.cid == cmd.cid for e in c.of_type("command.ack")))  # type: ignore[attr-defined]
