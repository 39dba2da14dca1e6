"""``civicedge bench ingest``: broker → durable store throughput with real processes, side by side with a
do-nothing subscriber on the same load, for one and for two ingestion workers."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from cloud.db import schema as t
from cloud.db.engine import make_engine, migrate
from simulators.services import Mosquitto

PUBLISHER = textwrap.dedent(
    """
    import sys, time
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from protocol import encode, envelope, topic
    from protocol.messages import Reading, TelemetryBatch
    port, dev, n, per = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    now = int(time.time() * 1000)
    payloads = [encode(envelope(TelemetryBatch(readings=[Reading(metric="m", value=float(j), ts=now + i * per + j)
                for j in range(per)]), dev=dev, seq=i + 1)) for i in range(n)]
    top = topic("bench", dev, "tele")
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub-" + dev)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    print("ready", flush=True)
    sys.stdin.readline()
    infos = [c.publish(top, p, qos=1) for p in payloads]
    for i in infos:
        i.wait_for_publish(120)
    c.disconnect(); c.loop_stop()
    """
)

RAW_SUBSCRIBER = textwrap.dedent(
    """
    import sys, time, threading
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    port, n = int(sys.argv[1]), int(sys.argv[2])
    got = 0
    done = threading.Event()
    def on_message(c, u, m):
        global got
        got += 1
        if got >= n:
            done.set()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-sub", clean_session=True)
    c.on_message = on_message
    c.on_subscribe = lambda *a: print("subscribed", flush=True)
    c.connect("127.0.0.1", port)
    c.subscribe("$share/raw/ce/v1/+/+/+", qos=1)
    c.loop_start()
    done.wait(300)
    print("done", time.time(), flush=True)
    c.disconnect(); c.loop_stop()
    """
)


def _start_publishers(port: int, devices: list[str], n: int, per: int) -> list[subprocess.Popen[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, str(port), d, str(n), str(per)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for d in devices
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return procs


def _go(procs: list[subprocess.Popen[str]]) -> float:
    t0 = time.time()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    return t0


def raw_rate(port: int, devices: list[str], n: int, per: int) -> float:
    total = n * len(devices)
    sub = subprocess.Popen(
        [sys.executable, "-c", RAW_SUBSCRIBER, str(port), str(total)], stdout=subprocess.PIPE, text=True
    )
    assert sub.stdout is not None and sub.stdout.readline().strip() == "subscribed"
    pubs = _start_publishers(port, devices, n, per)
    t0 = _go(pubs)
    line = sub.stdout.readline().split()
    for p in pubs:
        p.wait(120)
    sub.wait(30)
    return total / (float(line[1]) - t0)


def ingest_rate(port: int, devices: list[str], n: int, per: int, workers: int, work: Path) -> dict[str, Any]:
    db = work / f"ingest-{workers}.db"
    url = f"sqlite:///{db}"
    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(t.sites.insert().values(id="bench", name="bench", created_ms=0))
        conn.execute(
            t.devices.insert(),
            [
                {"id": d, "site_id": "bench", "kind": "bench", "name": d, "status": "unknown", "created_ms": 0}
                for d in devices
            ],
        )
    env = {
        **os.environ,
        "CE_DATABASE_URL": url,
        "CE_BROKER_URL": f"mqtt://127.0.0.1:{port}",
        "CE_INGEST_BATCH_ROWS": "200",
        "CE_INGEST_BATCH_MS": "50",
        # a group per run: persistent sessions of earlier runs' workers would keep receiving a share
        "CE_INGEST_SHARE_GROUP": f"bench{workers}{os.getpid()}",
    }
    procs = []
    for i in range(workers):
        p = subprocess.Popen(
            [sys.executable, "-m", "civicedge_cli", "cloud", "ingest", "--worker-id", f"bench{workers}-{i}"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            cwd=work,
        )
        assert p.stderr is not None
        said = [p.stderr.readline() for _ in range(2)]  # "connecting to the broker …", then "… subscribed …"
        if "subscribed" not in said[-1]:
            raise RuntimeError(f"ingest worker did not subscribe: {''.join(said)}")
        procs.append(p)
    total = n * len(devices)
    pubs = _start_publishers(port, devices, n, per)
    t0 = _go(pubs)
    stored = 0
    deadline = time.time() + 600
    with engine.connect() as conn:
        while stored < total and time.time() < deadline:
            time.sleep(0.02)
            stored = conn.execute(select(func.count()).select_from(t.messages)).scalar_one()
            conn.rollback()
    dt = time.time() - t0
    for p in pubs:
        p.wait(120)
    for p in procs:
        p.terminate()
        p.wait(30)
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(t.messages)).scalar_one()
        distinct = conn.execute(select(func.count(func.distinct(t.messages.c.msg_id)))).scalar_one()
        readings = conn.execute(select(func.count()).select_from(t.telemetry)).scalar_one()
    return {
        "msgs_per_s": total / dt,
        "readings_per_s": readings / dt,
        "lost": total - distinct,
        "duplicates_stored": rows - distinct,
        "readings": readings,
    }


def run(messages: int = 2000, readings_per_message: int = 100, publishers: int = 2) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ce-bench-ingest-"))
    devices = [f"pub-{i}" for i in range(publishers)]
    per_pub = messages // publishers
    with Mosquitto(workdir=work / "broker") as broker:
        raw = raw_rate(broker.port, devices, per_pub, readings_per_message)
        one = ingest_rate(broker.port, devices, per_pub, readings_per_message, 1, work)
        two = ingest_rate(broker.port, devices, per_pub, readings_per_message, 2, work)
    return {
        "bench": "ingest",
        "messages": per_pub * publishers,
        "readings_per_message": readings_per_message,
        "publishers": publishers,
        "readings_per_s": round(one["readings_per_s"]),
        "msgs_per_s": round(one["msgs_per_s"], 1),
        "raw_subscriber_msgs_per_s": round(raw, 1),
        "ratio": round(one["msgs_per_s"] / raw, 3),
        "workers_2_readings_per_s": round(two["readings_per_s"]),
        "workers_2_speedup": round(two["msgs_per_s"] / one["msgs_per_s"], 3),
        "lost": one["lost"] + two["lost"],
        "duplicates_stored": one["duplicates_stored"] + two["duplicates_stored"],
        "store": "sqlite",
        "targets": {"readings_per_s": 50_000, "ratio": 0.8, "lost": 0, "duplicates_stored": 0},
    }
