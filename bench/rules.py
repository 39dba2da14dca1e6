"""``civicedge bench rules``: ingestion with the default rule set on vs off (same run, alternating rounds),
and the engine's cost per observation with 1,000 rules."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import cloud.rules
from cloud.db import schema as t
from cloud.ingest.store import Inbound, now_ms
from cloud.rules.engine import RuleEngine
from cloud.rules.model import load_rules
from cloud.service import CloudService
from cloud.settings import Settings
from protocol import encode, envelope, topic
from protocol.messages import ManholeReading

DEFAULT_RULES = Path(cloud.rules.__file__).parent / "default.yaml"


def _service(work: Path, name: str, rules: bool) -> CloudService:
    settings = Settings(
        database_url=f"sqlite:///{work / name}.db", rules_file=DEFAULT_RULES if rules else None, _env_file=None
    )
    svc = CloudService(settings, start_mqtt=False)
    svc.start()
    with svc.engine.begin() as conn:
        conn.execute(t.sites.insert().values(id="bench", name="bench", created_ms=0))
        conn.execute(
            t.devices.insert(),
            [
                {
                    "id": f"mh-{i:04d}",
                    "site_id": "bench",
                    "kind": "manhole",
                    "name": "",
                    "status": "unknown",
                    "created_ms": 0,
                }
                for i in range(200)
            ],
        )
    return svc


def _batches(n_batches: int, size: int, seed: int) -> list[list[Inbound]]:
    out = []
    for b in range(n_batches):
        batch = []
        for i in range(size):
            dev = f"mh-{(b * size + i) % 200:04d}"
            body = ManholeReading(
                tilt_deg=(i % 9) * 1.0,
                battery_v=3.6,
                water_level_cm=float((b + i) % 200),
                gas_lel=float(i % 12),
                temperature_c=15.0,
                rssi_dbm=-90.0,
            )
            batch.append(
                Inbound(
                    topic("bench", dev, "tele"),
                    encode(envelope(body, dev=dev, seq=seed + b * size + i)),
                    now_ms(),  # received now, as in production (the absence timer runs on the real clock)
                )
            )
        out.append(batch)
    return out


def _rate(svc: CloudService, batches: list[list[Inbound]]) -> float:
    t0 = time.perf_counter()
    for batch in batches:
        res = svc.store.write_batch(batch)
        svc._on_batch(res)
    return sum(len(b) for b in batches) / (time.perf_counter() - t0)


def per_observation_us(n_rules: int = 1000, observations: int = 20_000) -> float:
    metrics = [f"m{i}" for i in range(50)]
    text = "rules:\n" + "".join(
        f"  - {{id: r{i}, match: {{kinds: [manhole]}}, when: {{type: threshold, metric: {metrics[i % 50]}, "
        f"above: {50 + i % 40}, for_s: 5}}}}\n"
        for i in range(n_rules)
    )
    engine = RuleEngine(load_rules(text))
    t0 = time.perf_counter()
    for i in range(observations):
        engine.observe_reading("bench", "manhole", f"mh-{i % 200}", metrics[i % 50], float(i % 100), i * 10)
    return (time.perf_counter() - t0) / observations * 1e6


def run(rounds: int = 3, batches: int = 20, size: int = 200) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ce-bench-rules-"))
    on, off = _service(work, "on", True), _service(work, "off", False)
    with_rules, without = [], []
    try:
        for r in range(rounds):
            without.append(_rate(off, _batches(batches, size, r * 10**6)))
            with_rules.append(_rate(on, _batches(batches, size, r * 10**6)))
    finally:
        on.stop()
        off.stop()
    med = statistics.median
    return {
        "bench": "rules",
        "messages_per_round": batches * size,
        "rounds": rounds,
        "msgs_per_s_rules_off": round(med(without)),
        "msgs_per_s_rules_on": round(med(with_rules)),
        "ratio": round(med(w / o for w, o in zip(with_rules, without, strict=True)), 3),
        "default_rules": len(load_rules(DEFAULT_RULES.read_text()).rules),
        "per_message_us_1000_rules": round(per_observation_us(), 2),
        "targets": {"ratio": 0.9, "per_message_us_1000_rules": 20},
    }
