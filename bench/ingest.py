"""``civicedge bench ingest``: broker → durable store with real processes, each figure beside its own yardstick
measured in the same run on the same machine:

* batches (``readings_per_message`` readings a message): readings/s of one worker (and of two) against the
  **storage ceiling** — the same rows written straight into a fresh database of the same engine, with the same
  table and indexes (SQLite: the driver's ``executemany``, 5,000-row transactions, WAL, ``synchronous=NORMAL``;
  PostgreSQL: ``COPY``, 5,000-row transactions). ``ratio_to_storage`` = readings/s ÷ ceiling, neither sharing
  the cores with the load generators: the ceiling is a bare loop, and the worker (SIGSTOP while the publishers
  publish, timed from SIGCONT once they exited) drains the backlog the broker holds for it, with the cores to
  itself and the broker. ``readings_per_s``, ``msgs_per_s``, ``workers_2_*`` are such backlog runs.
  ``live_readings_per_s`` / ``live_ratio_to_storage`` / ``ratio_to_raw``: one worker while the publishers
  publish, all on the same two cores (reported, not judged).
* single-reading messages (``manhole.reading``, the district's message): messages/s against a do-nothing
  subscriber receiving the same messages from the same broker, both while the publishers publish
  (``single_ratio_to_raw``).

``lost`` and ``duplicates_stored`` count over every run (a message id stored twice, or never).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from bench.databases import fresh_database
from cloud.db import schema as t
from cloud.db.engine import make_engine, migrate
from simulators.services import Mosquitto

PUBLISHER = textwrap.dedent(
    """
    import sys, time
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from protocol import encode, envelope, topic
    from protocol.messages import ManholeReading, Reading, TelemetryBatch
    port, dev, n, per = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    now = int(time.time() * 1000)
    def body(i):
        if per == 0:  # a cover's reading, as the district's nodes send it
            return ManholeReading(tilt_deg=0.4 + i % 7 / 10, battery_v=3.61, water_level_cm=31.5, gas_lel=0.3,
                                  temperature_c=16.5, rssi_dbm=-95)
        return TelemetryBatch(readings=[Reading(metric="m", value=float(j), ts=now + i * per + j) for j in range(per)])
    payloads = [encode(envelope(body(i), dev=dev, seq=i + 1)) for i in range(n)]
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
CEILING_ROWS_PER_TXN = 5000


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
    """Messages/s a subscriber that does nothing with them receives (QoS 1, shared subscription)."""
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


def _prepare(url: str, devices: list[str], kind: str) -> Engine:
    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(t.sites.insert().values(id="bench", name="bench", created_ms=0))
        row = {"site_id": "bench", "kind": kind, "status": "unknown", "created_ms": 0}
        conn.execute(t.devices.insert(), [{**row, "id": d, "name": d} for d in devices])
    return engine


def ingest_rate(
    port: int,
    devices: list[str],
    n: int,
    per: int,
    workers: int,
    work: Path,
    url: str,
    label: str,
    backlog: bool = False,
) -> dict[str, Any]:
    """Start ``workers`` ingestion processes (``cloud ingest``), publish, and time until everything is stored.

    ``backlog``: the workers are paused (SIGSTOP) while the publishers fill the broker, and timed from when they
    go on: what ingestion does with the cores to itself and the broker, as the storage ceiling is measured, and
    as a worker catches up after a restart. Otherwise the publishers publish while the workers ingest, all
    sharing the machine's cores."""
    engine = _prepare(url, devices, "manhole" if per == 0 else "bench")
    env = {
        **os.environ,
        "CE_DATABASE_URL": url,
        "CE_BROKER_URL": f"mqtt://127.0.0.1:{port}",
        "CE_INGEST_BATCH_ROWS": "200",
        "CE_INGEST_BATCH_MS": "50",
        # a group per run: persistent sessions of earlier runs' workers would keep receiving a share
        "CE_INGEST_SHARE_GROUP": f"bench{label}{workers}{os.getpid()}",
    }
    procs = []
    for i in range(workers):
        p = subprocess.Popen(
            [sys.executable, "-m", "civicedge_cli", "cloud", "ingest", "--worker-id", f"bench{label}{workers}-{i}"],
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
    if backlog:
        # paused, connected: the broker fills the worker's socket and queues the rest in its session (publishing
        # takes seconds, well inside the worker's 30 s keepalive); timed from when it goes on
        for p in procs:
            p.send_signal(signal.SIGSTOP)
        try:
            _go(pubs)
            for pub in pubs:
                pub.wait(120)
        finally:
            t0 = time.time()
            for p in procs:
                p.send_signal(signal.SIGCONT)
    else:
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
        c = t.telemetry.c
        stored_rows = [tuple(r) for r in conn.execute(select(c.device_id, c.metric, c.ts, c.value, c.unit, c.msg_id))]
    engine.dispose()
    return {
        "msgs_per_s": total / dt,
        "readings_per_s": readings / dt,
        "lost": total - distinct,
        "duplicates_stored": rows - distinct,
        "readings": readings,
        "rows": stored_rows,
    }


def storage_ceiling(url: str, rows: list[tuple[Any, ...]]) -> float:
    """Rows/s of the bare write of ``rows`` into the telemetry table of a fresh database (same schema and
    indexes as the cloud's): the storage engine's own ceiling for what ingestion stores."""
    engine = make_engine(url)
    migrate(engine)
    cols = "device_id, metric, ts, value, unit, msg_id"
    raw = engine.raw_connection()
    try:
        conn: Any = raw.driver_connection
        t0 = time.perf_counter()
        if engine.dialect.name == "sqlite":
            sql = f"INSERT INTO telemetry ({cols}) VALUES (?, ?, ?, ?, ?, ?)"
            for k in range(0, len(rows), CEILING_ROWS_PER_TXN):
                conn.execute("BEGIN")
                conn.executemany(sql, rows[k : k + CEILING_ROWS_PER_TXN])
                conn.execute("COMMIT")
        else:
            conn.commit()
            for k in range(0, len(rows), CEILING_ROWS_PER_TXN):
                with conn.cursor() as cur, cur.copy(f"COPY telemetry ({cols}) FROM STDIN") as copy:
                    for r in rows[k : k + CEILING_ROWS_PER_TXN]:
                        copy.write_row(r)
                conn.commit()
        dt = time.perf_counter() - t0
    finally:
        raw.close()
        engine.dispose()
    return len(rows) / dt


def run(
    messages: int = 6000,
    readings_per_message: int = 100,
    publishers: int = 2,
    db: str = "sqlite",
    single_messages: int = 20_000,
    single_publishers: int = 4,
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ce-bench-ingest-"))
    devices = [f"pub-{i}" for i in range(publishers)]
    covers = [f"cover-{i}" for i in range(single_publishers)]
    per_pub = messages // publishers
    per_cover = single_messages // single_publishers
    per = readings_per_message
    with Mosquitto(workdir=work / "broker") as broker:
        raw = raw_rate(broker.port, devices, per_pub, per)
        with fresh_database(db, work, "ingest1") as url:
            one = ingest_rate(broker.port, devices, per_pub, per, 1, work, url, "b", backlog=True)
        with fresh_database(db, work, "ceiling") as url:
            ceiling = storage_ceiling(url, one.pop("rows"))
        with fresh_database(db, work, "live") as url:
            live = ingest_rate(broker.port, devices, per_pub, per, 1, work, url, "l")
            live.pop("rows")
        with fresh_database(db, work, "ingest2") as url:
            two = ingest_rate(broker.port, devices, per_pub, per, 2, work, url, "b", backlog=True)
        single_raw = raw_rate(broker.port, covers, per_cover, 0)
        with fresh_database(db, work, "single") as url:
            single = ingest_rate(broker.port, covers, per_cover, 0, 1, work, url, "s")
        single.pop("rows")
    runs = (one, live, two, single)
    return {
        "bench": "ingest",
        "db": db,
        "messages": per_pub * publishers,
        "readings_per_message": per,
        "publishers": publishers,
        "readings_per_s": round(one["readings_per_s"]),
        "msgs_per_s": round(one["msgs_per_s"], 1),
        "storage_ceiling_readings_per_s": round(ceiling),
        "ratio_to_storage": round(one["readings_per_s"] / ceiling, 3),
        "live_readings_per_s": round(live["readings_per_s"]),
        "live_ratio_to_storage": round(live["readings_per_s"] / ceiling, 3),
        "raw_subscriber_msgs_per_s": round(raw, 1),
        "ratio_to_raw": round(live["msgs_per_s"] / raw, 3),
        "workers_2_readings_per_s": round(two["readings_per_s"]),
        "workers_2_speedup": round(two["msgs_per_s"] / one["msgs_per_s"], 3),
        "single_messages": per_cover * single_publishers,
        "single_msgs_per_s": round(single["msgs_per_s"], 1),
        "single_raw_subscriber_msgs_per_s": round(single_raw, 1),
        "single_ratio_to_raw": round(single["msgs_per_s"] / single_raw, 3),
        "lost": sum(r["lost"] for r in runs),
        "duplicates_stored": sum(r["duplicates_stored"] for r in runs),
        "targets": {"ratio_to_storage": 0.8, "single_ratio_to_raw": 0.5, "lost": 0, "duplicates_stored": 0},
    }
