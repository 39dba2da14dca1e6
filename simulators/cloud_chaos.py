"""``civicedge chaos cloud``: a steady stream from many devices with hostile messages of every kind mixed in,
through a real Mosquitto to a cloud node on this machine. Every valid message must be stored (``lost`` = 0)
and ingestion must not stall; the report counts what was refused and why.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, insert, select

from cloud.db import schema as t
from cloud.ingest.health import ingest_report
from cloud.service import CloudService
from cloud.settings import Settings
from protocol import encode, envelope, topic
from protocol.messages import AlarmRaise, Body, DeviceEvent, ManholeReading, Reading, TelemetryBatch
from protocol.signing import generate_key, public_key_b64, signed
from simulators.hostile import hostile_corpus
from simulators.services import Mosquitto

Progress = Callable[[str], None]
SITE, OTHER_SITE = "chaos", "chaos-other"


def _valid(i: int) -> Body:
    k = i % 4
    if k == 0:
        return AlarmRaise(key=f"gas:{i}", code="gas", severity="critical", message=f"gas high ({i})")
    if k == 1:
        return DeviceEvent(code="door.opened", details={"i": i})
    if k == 2:
        return ManholeReading(tilt_deg=float(i % 90), battery_v=3.6)
    return TelemetryBatch(
        readings=[Reading(metric="water.flow", value=float(j), ts=1_795_000_000_000 + j) for j in range(10)]
    )


def cloud_scenario(
    duration_s: float = 20.0,
    rate: float = 300.0,
    devices: int = 50,
    hostile_share: float = 0.1,
    database_url: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the stream for ``duration_s`` at ``rate`` messages a second, ``hostile_share`` of them hostile; wait
    for ingestion to drain; return the report."""
    say = progress or (lambda _m: None)
    work = Path(tempfile.mkdtemp(prefix="ce-chaos-cloud-"))
    broker = Mosquitto(workdir=work / "mosquitto")
    broker.start()
    settings = Settings(
        database_url=database_url or f"sqlite:///{work / 'cloud.db'}",
        broker_url=broker.url,
        command_key_file=work / "command-key.pem",
        update_key_file=work / "update-key.pem",
        media_dir=work / "media",
        ingest_batch_ms=20,
        _env_file=None,
    )
    svc = CloudService(settings)
    try:
        svc.start()
        names = [f"node-{i:03d}" for i in range(max(2, devices))]
        # every other device is a gateway with its own signing key (what it says is signed); the rest are boards
        keys = {d: generate_key() for d in names[::2]}
        now = int(time.time() * 1000)
        with svc.engine.begin() as conn:
            conn.execute(insert(t.sites), [{"id": s, "name": s, "created_ms": now} for s in (SITE, OTHER_SITE)])
            conn.execute(
                insert(t.devices),
                [
                    {
                        "id": d,
                        "site_id": SITE,
                        "kind": "gateway",
                        "name": d,
                        "status": "unknown",
                        "created_ms": now,
                        "signing_key": public_key_b64(keys[d]) if d in keys else None,
                    }
                    for d in names
                ],
            )
        if not svc.workers[0].connected.wait(15):
            raise RuntimeError(f"the ingestion worker cannot reach the broker at {broker.url}")
        return _run(svc, broker, names, keys, duration_s, rate, hostile_share, say)
    finally:
        svc.stop()
        broker.close()
        shutil.rmtree(work, ignore_errors=True)


def _run(
    svc: CloudService,
    broker: Mosquitto,
    names: list[str],
    keys: dict[str, Ed25519PrivateKey],
    duration_s: float,
    rate: float,
    hostile_share: float,
    say: Progress,
) -> dict[str, Any]:
    rng = random.Random(7)
    corpora = {
        d: hostile_corpus(SITE, d, OTHER_SITE, names[(k + 1) % len(names)], keyed=d in keys)
        for k, d in enumerate(names[:8])
    }
    stall = [0.0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.1):
            stall[0] = max([stall[0], *(w.health().oldest_pending_s for w in svc.workers)])

    sampler = threading.Thread(target=sample, name="chaos-stall-sampler", daemon=True)
    sampler.start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="chaos-devices")
    pub.max_inflight_messages_set(100)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    valid = hostile = 0
    sent_ids: list[str] = []
    seq: dict[str, int] = {}
    total = int(duration_s * rate)
    t0 = time.monotonic()
    say(f"publishing {total} messages from {len(names)} devices at {rate:g}/s, {hostile_share:.0%} hostile")
    last: mqtt.MQTTMessageInfo | None = None
    for i in range(total):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        dev = names[i % len(names)]
        if rng.random() < hostile_share:
            top, payload = rng.choice(corpora[rng.choice(list(corpora))])
            hostile += 1
        else:
            body = _valid(i)
            seq[dev] = seq.get(dev, 0) + 1
            env = signed(keys.get(dev), envelope(body, dev=dev, seq=seq[dev]))
            ch = "alm" if isinstance(body, AlarmRaise) else "evt" if isinstance(body, DeviceEvent) else "tele"
            top, payload = topic(SITE, dev, ch), encode(env)
            sent_ids.append(env.id)
            valid += 1
        last = pub.publish(top, payload, qos=1)
        if i and i % max(1, int(rate * 5)) == 0:
            say(f"  {i} sent")
    if last is not None:
        last.wait_for_publish(30)
    sent_s = time.monotonic() - t0
    pub.disconnect()
    pub.loop_stop()

    def stored() -> int:
        """How many of the valid messages sent are stored (by their ids: a stored hostile one cannot hide a loss)."""
        n = 0
        with svc.engine.connect() as conn:
            for k in range(0, len(sent_ids), 500):
                ids = sent_ids[k : k + 500]
                n += int(conn.execute(select(func.count()).where(t.messages.c.msg_id.in_(ids))).scalar_one())
        return n

    deadline = time.monotonic() + 60
    while (n := stored()) < valid and time.monotonic() < deadline:
        time.sleep(0.2)
    sampling.set()
    sampler.join(5)
    report = ingest_report(svc.workers, svc.metrics)
    say(f"stored {n} of {valid} valid messages; {sum(report['dead_letters'].values())} dead letters")
    return {
        "duration_s": round(sent_s, 2),
        "devices": len(names),
        "rate": round((valid + hostile) / sent_s, 1) if sent_s else 0.0,
        "valid_sent": valid,
        "valid_stored": n,
        "lost": max(0, valid - n),
        "hostile_sent": hostile,
        "hostile_ignored": int(svc.metrics.get("ce_ingest_ignored_total")),
        "max_stall_s": round(stall[0], 3),
        "stalled_at_end": report["stalled"],
        "dead_letters": report["dead_letters"],
        "store_retries": sum(w.errors for w in svc.workers),
    }
