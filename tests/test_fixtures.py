"""The shared fixtures talk to real services: a broker that survives restarts, PostgreSQL, VictoriaMetrics."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request

import aiomqtt
import psycopg

from simulators.services import Mosquitto, VictoriaMetrics


async def _collect(client: aiomqtt.Client, n: int, timeout: float = 10.0) -> list[bytes]:
    got: list[bytes] = []
    async with asyncio.timeout(timeout):
        async for msg in client.messages:
            got.append(bytes(msg.payload))  # type: ignore[arg-type]
            if len(got) == n:
                break
    return got


async def test_qos1_publish_and_receive(mosquitto: Mosquitto) -> None:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="sub") as sub:
        await sub.subscribe("ce/v1/t/d/evt", qos=1)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="pub") as pub:
            for i in range(20):
                await pub.publish("ce/v1/t/d/evt", str(i).encode(), qos=1)
        got = await _collect(sub, 20)
    assert got == [str(i).encode() for i in range(20)]


async def test_qos1_queued_messages_survive_broker_restart(mosquitto: Mosquitto) -> None:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="durable", clean_session=False) as sub:
        await sub.subscribe("ce/v1/t/d/alm", qos=1)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="pub") as pub:
        for i in range(10):
            await pub.publish("ce/v1/t/d/alm", f"a{i}".encode(), qos=1)
    mosquitto.restart()
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="durable", clean_session=False) as sub:
        got = await _collect(sub, 10)
    assert got == [f"a{i}".encode() for i in range(10)]


def test_broker_stop_start(mosquitto: Mosquitto) -> None:
    mosquitto.stop()
    assert not mosquitto.running
    mosquitto.start()
    assert mosquitto.running


def test_postgres_fresh_database(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute("select count(*) from information_schema.tables where table_schema='public'").fetchone()
        assert tables == (0,)
        conn.execute("create table probe (x int)")
        conn.execute("insert into probe values (42)")
        assert conn.execute("select x from probe").fetchone() == (42,)


def test_victoriametrics_write_and_read(victoriametrics: VictoriaMetrics) -> None:
    line = b"fixture_probe,dev=d1 value=21.5 1795000000000000000\n"
    req = urllib.request.Request(f"{victoriametrics.url}/api/v2/write?bucket=b&org=o", data=line, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 204
    victoriametrics.flush()
    q = urllib.parse.urlencode({"match[]": '{__name__="fixture_probe_value"}'})
    with urllib.request.urlopen(f"{victoriametrics.url}/api/v1/export?{q}", timeout=5) as r:
        rows = [json.loads(x) for x in r.read().splitlines() if x]
    assert rows and rows[0]["values"] == [21.5] and rows[0]["metric"]["dev"] == "d1"
