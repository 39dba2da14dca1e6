"""API surface: OpenAPI, auth, validation errors as JSON, VictoriaMetrics export read back."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
import uuid

import aiomqtt

from protocol import encode, envelope, topic
from protocol.messages import Reading, TelemetryBatch
from simulators.services import Mosquitto, VictoriaMetrics
from tests.cloud.conftest import MakeCloud, register


def test_openapi_served(make_cloud: MakeCloud) -> None:
    _, api = make_cloud(ingest_workers=0)
    spec = api.get("/openapi.json").json()
    for path in (
        "/api/devices",
        "/api/devices/{device_id}/telemetry",
        "/api/devices/{device_id}/commands",
        "/api/dead-letters",
        "/api/events",
        "/api/sites",
        "/api/commands/{cid}",
    ):
        assert path in spec["paths"], path
    assert api.get("/healthz").json()["database"] == "ok"


def test_tokens_required_when_configured(make_cloud: MakeCloud) -> None:
    _, api = make_cloud(ingest_workers=0, api_tokens=["s3cret-s3cret-s3cret"])
    r = api.get("/api/devices")
    assert r.status_code == 401 and r.json()["error"].startswith("missing or invalid bearer token")
    ok = api.get("/api/devices", headers={"Authorization": "Bearer s3cret-s3cret-s3cret"})
    assert ok.status_code == 200 and ok.json()["total"] == 0
    assert api.get("/healthz").status_code == 200  # probes stay open


def test_errors_are_json_with_reasons(make_cloud: MakeCloud) -> None:
    _, api = make_cloud(ingest_workers=0)
    r = api.post("/api/devices", json={"id": "Bad Id", "site_id": "x"})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "body.id"
    r = api.post("/api/devices", json={"id": "gate-01", "site_id": "nowhere"})
    assert r.status_code == 422 and "POST /api/sites" in r.json()["error"]
    assert api.get("/api/devices/nope").json() == {"error": "no device 'nope'", "status": 404}
    assert api.get("/api/devices", params={"limit": 0}).status_code == 422


async def test_readings_reach_victoriametrics(
    make_cloud: MakeCloud, mosquitto: Mosquitto, victoriametrics: VictoriaMetrics
) -> None:
    svc, api = make_cloud(influx_url=victoriametrics.url)
    register(api, "riverside", "gate-01")
    now = time.time_ns() // 1_000_000
    metric = f"vm_probe_{uuid.uuid4().hex[:8]}"  # the VictoriaMetrics server is shared by the session
    batch = TelemetryBatch(readings=[Reading(metric=metric, value=float(i), ts=now - 10_000 + i) for i in range(20)])
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as c:
        await c.publish(topic("riverside", "gate-01", "tele"), encode(envelope(batch, dev="gate-01", seq=1)), qos=1)
    assert svc.tsdb is not None
    deadline = time.monotonic() + 20
    while svc.tsdb.written < 20:
        assert time.monotonic() < deadline, f"tsdb written {svc.tsdb.written}"
        await asyncio.sleep(0.05)
    victoriametrics.flush()
    q = urllib.parse.urlencode({"match[]": f'{{__name__="telemetry_{metric}",device="gate-01"}}'})
    with urllib.request.urlopen(f"{victoriametrics.url}/api/v1/export?{q}", timeout=5) as r:
        rows = [json.loads(x) for x in r.read().splitlines() if x]
    assert sorted(v for row in rows for v in row["values"]) == [float(i) for i in range(20)]
    assert rows[0]["metric"]["site"] == "riverside"


def test_retention_deletes_old_telemetry_only(make_cloud: MakeCloud) -> None:
    from sqlalchemy import func, select

    from cloud.db import schema as t

    svc, _ = make_cloud(ingest_workers=0, telemetry_retention_days=1)
    now = time.time_ns() // 1_000_000
    rows = [
        {"device_id": "d", "metric": "m", "ts": ts, "value": 1.0, "unit": None, "msg_id": "x"}
        for ts in (now - 3 * 86_400_000, now - 2 * 86_400_000, now - 3_600_000, now)
    ]
    with svc.engine.begin() as conn:
        conn.execute(t.telemetry.insert(), rows)
    assert svc.apply_retention() == 2
    with svc.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.telemetry)).scalar_one() == 2
