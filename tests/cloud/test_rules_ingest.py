"""Rules in the ingestion path with a real broker: alarms from a threshold, absence on the timer, a webhook
that hangs does not hold up ingestion, reload via the API."""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import aiomqtt

from protocol import encode, envelope, topic
from protocol.messages import DeviceEvent, ManholeReading
from simulators.services import Mosquitto
from tests.cloud.conftest import MakeCloud
from tests.cloud.test_ingest import until

RULES = """
rules:
  - id: cover-tilt
    match: {kinds: [manhole]}
    when: {type: threshold, metric: tilt_deg, above: 5}
    actions:
      - alarm: {severity: major, code: cover_tilt, message: "cover tilted"}
      - webhook: {url: "http://127.0.0.1:PORT/hook", timeout_s: 0.5, retries: 0}
  - id: gateway-silent
    match: {kinds: [gateway]}
    when: {type: absence, after_s: 1}
    actions:
      - alarm: {severity: warning, code: gateway_offline}
"""


class SlowHook(BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self) -> None:
        SlowHook.calls += 1
        time.sleep(3)  # much longer than the rule's timeout

    def log_message(self, *_a: object) -> None:
        pass


async def test_rules_raise_and_clear_alarms_without_slowing_ingestion(
    make_cloud: MakeCloud, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    hook = HTTPServer(("127.0.0.1", 0), SlowHook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("PORT", str(hook.server_address[1])))
    svc, api = make_cloud(rules_file=rules)
    live = svc.live.subscribe(lambda _e: True)  # a console's live channel
    api.post("/api/sites", json={"id": "riverside"})
    api.post("/api/devices", json={"id": "mh-001", "site_id": "riverside", "kind": "manhole"})
    api.post("/api/devices", json={"id": "gw-01", "site_id": "riverside", "kind": "gateway"})
    tele = topic("riverside", "mh-001", "tele")
    try:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as c:
            await c.publish(
                tele, encode(envelope(ManholeReading(tilt_deg=12.0, battery_v=3.6), dev="mh-001", seq=1)), qos=1
            )
            await until(lambda: any(a["key"] == "rule:cover-tilt" for a in api.get("/api/alarms").json()["items"]))
            # the webhook is now hanging; ingestion carries on
            t0 = time.monotonic()
            await c.publish(
                topic("riverside", "mh-001", "evt"),
                encode(envelope(DeviceEvent(code="probe"), dev="mh-001", seq=2)),
                qos=1,
            )
            await until(lambda: api.get("/api/events", params={"type": "event"}).json()["total"] == 1)
            assert time.monotonic() - t0 < 2.5
            await c.publish(
                tele, encode(envelope(ManholeReading(tilt_deg=1.0, battery_v=3.6), dev="mh-001", seq=3)), qos=1
            )
        await until(lambda: api.get("/api/alarms", params={"state": "cleared"}).json()["total"] == 1)
        cleared = api.get("/api/alarms", params={"state": "cleared"}).json()["items"][0]
        assert cleared["cleared_by"] == "rule:cover-tilt" and cleared["code"] == "cover_tilt"
        # the consoles saw the rule's alarm raised and cleared, as they see a device's
        seen = []
        while len([e for e in seen if e.get("kind") == "alarm" and e.get("id") == cleared["id"]]) < 2:
            seen.append(await asyncio.wait_for(live.get(), 5))
        raised = next(e for e in seen if e.get("id") == cleared["id"] and e["event"] == "raised")
        assert raised["code"] == "cover_tilt" and raised["device_id"] == "mh-001" and raised["site_id"] == "riverside"
        assert "confidential" in raised  # labelled like every other alarm before it left
        # the gateway never spoke: the timer raises its absence alarm
        await until(
            lambda: any(
                a["key"] == "rule:gateway-silent" and a["device_id"] == "gw-01"
                for a in api.get("/api/alarms").json()["items"]
            ),
            timeout=20,
        )
        assert SlowHook.calls >= 1
        listed = api.get("/api/rules").json()
        assert [r["id"] for r in listed["rules"]] == ["cover-tilt", "gateway-silent"]
        rules.write_text("rules: [{id: x, when: {type: bogus}}]")
        bad = api.post("/api/rules/reload")
        assert bad.status_code == 422 and "rules.0.when" in bad.json()["error"]
        rules.write_text("rules: []")
        assert api.post("/api/rules/reload").json() == {"loaded": 0}
    finally:
        live.close()
        hook.shutdown()


def test_a_device_clock_far_ahead_cannot_blind_the_rules(tmp_path: Path) -> None:
    """A board whose clock jumps years ahead sends one reading: it is stored, but the rules do not take it, or
    every honest reading after it would look older than the newest applied and be ignored for good."""
    from cloud.db.engine import make_engine, migrate
    from cloud.events import AlarmRaised, BatchStored, EventStream
    from cloud.ingest.store import Store, now_ms
    from cloud.metrics import Metrics
    from cloud.rules.model import load_rules
    from cloud.rules.runner import RuleContext, RuleRunner
    from cloud.workorders.service import WorkOrders

    engine = make_engine(f"sqlite:///{tmp_path / 'cloud.db'}")
    migrate(engine)
    store, stream, raised = Store(engine), EventStream(), []
    stream.subscribe(AlarmRaised, raised.extend)
    ctx = RuleContext(engine, Metrics(), stream, store, WorkOrders(engine, tmp_path / "media"), lambda: None, 60)
    tilt = "rules: [{id: cover-tilt, match: {kinds: [manhole]}, when: {type: threshold, metric: tilt_deg, above: 5},"
    tilt += " actions: [{alarm: {severity: major, code: cover_tilt}}]}]"
    rules = RuleRunner(ctx, load_rules(tilt), in_database=False)
    store.kinds["mh-001"], store.sites["mh-001"] = "manhole", "riverside"
    now = now_ms()
    rules.on_stored(BatchStored([("mh-001", "tilt_deg", 2**53 - 1, 1.0, None, "a")], [], []))
    rules.on_stored(BatchStored([("mh-001", "tilt_deg", now, 12.0, None, "b")], [], []))
    assert [(e.device, e.code) for e in raised] == [("mh-001", "cover_tilt")]
    assert ctx.metrics.get("ce_rules_future_readings_total") == 1
    rules.pool.shutdown(wait=False, cancel_futures=True)
