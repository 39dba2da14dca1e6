"""A cover tilts → alarm → work order dispatched to the department owning that cover → resolved with a photo →
closed; grid-worker reports, lifecycle refusals, photo limits and EXIF stripping, overdue orders."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import aiomqtt
from PIL import Image
from sqlalchemy import update

from cloud.ingest.store import now_ms
from cloud.rules.engine import RuleEngine
from cloud.rules.model import load_rules
from cloud.workorders.tables import work_orders
from protocol import encode, envelope, topic
from protocol.messages import ManholeReading
from simulators.services import Mosquitto
from tests.cloud.conftest import MakeCloud
from tests.cloud.test_ingest import until

RULES = """
rules:
  - id: cover-tilt
    match: {kinds: [manhole]}
    when: {type: threshold, metric: tilt_deg, above: 5, clear_at: 3}
    actions:
      - alarm: {severity: major, code: cover_tilt}
      - work_order: {title: "Manhole cover tilted", priority: high}
"""
CSV = """id,kind,subtype,department_id,grid_cell_id,lat,lon,device_id,install_date,notes
mh-A,manhole_cover,power,power,g-0001,31.2301,121.4701,mh-node-1,,
mh-B,manhole_cover,sewage,water,g-0001,31.2302,121.4702,mh-node-2,,
"""


def jpeg_with_exif() -> bytes:
    img = Image.new("RGB", (800, 600), (120, 130, 140))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x8825] = {2: (31.0, 13.0, 48.0)}  # GPS info
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    return buf.getvalue()


async def test_tilt_to_closed_work_order(make_cloud: MakeCloud, mosquitto: Mosquitto, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    svc, api = make_cloud(rules_file=rules, media_dir=tmp_path / "media")
    live = svc.live.subscribe(lambda _e: True)  # a console's live channel
    api.post("/api/sites", json={"id": "riverside"})
    for dev in ("mh-node-1", "mh-node-2"):
        api.post("/api/devices", json={"id": dev, "site_id": "riverside", "kind": "manhole"})
    api.post("/api/departments", json={"id": "power", "name": "Power Grid Co."})
    api.post("/api/departments", json={"id": "water", "name": "Water Authority"})
    api.post("/api/grid-cells", json={"id": "g-0001", "worker_name": "Li Wei"})
    assert api.post("/api/assets/import", content=CSV).json()["imported"] == 2

    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as c:
        reading = ManholeReading(tilt_deg=12.0, battery_v=3.6)
        await c.publish(
            topic("riverside", "mh-node-1", "tele"), encode(envelope(reading, dev="mh-node-1", seq=1)), qos=1
        )
    await until(lambda: api.get("/api/work-orders").json()["total"] == 1)
    wo = api.get("/api/work-orders").json()["items"][0]
    assert (wo["state"], wo["department_id"], wo["asset_id"], wo["priority"]) == ("dispatched", "power", "mh-A", "high")
    assert wo["lat"] == 31.2301 and wo["overdue"] is False
    assert any(a["key"] == "rule:cover-tilt" for a in api.get("/api/alarms").json()["items"])
    wid = wo["id"]
    seen: list[dict[str, object]] = []
    while not any(e.get("kind") == "workorder" and e.get("id") == wid for e in seen):
        seen.append(await asyncio.wait_for(live.get(), 5))  # the rule's work order was pushed to the consoles
    pushed = next(e for e in seen if e.get("kind") == "workorder")
    assert pushed["event"] == "created" and pushed["department_id"] == "power" and pushed["confidential"] is False
    live.close()

    # the crew accepts; resolving needs an "after" photo
    assert api.post(f"/api/work-orders/{wid}/accept", json={"by": "power-crew-3"}).json()["state"] == "accepted"
    r = api.post(f"/api/work-orders/{wid}/resolve", json={"by": "power-crew-3", "note": "cover reseated"})
    assert r.status_code == 409 and "'after' photo" in r.json()["error"]
    photo = api.post(
        f"/api/work-orders/{wid}/photos", params={"stage": "after", "by": "power-crew-3"}, content=jpeg_with_exif()
    )
    assert photo.status_code == 201, photo.text
    stored = Image.open(io.BytesIO(api.get(f"/api/work-orders/{wid}/photos/{photo.json()['id']}").content))
    assert stored.size == (800, 600) and not stored.getexif()  # EXIF (maker, GPS) gone
    thumb = Image.open(
        io.BytesIO(api.get(f"/api/work-orders/{wid}/photos/{photo.json()['id']}", params={"thumb": True}).content)
    )
    assert max(thumb.size) == 256
    r = api.post(f"/api/work-orders/{wid}/resolve", json={"by": "power-crew-3", "note": "cover reseated"})
    assert r.json()["state"] == "resolved" and r.json()["resolution_note"] == "cover reseated"
    closed = api.post(f"/api/work-orders/{wid}/close", json={"by": "operator-zhang"}).json()
    assert closed["state"] == "closed"
    assert [h["action"] for h in closed["history"]] == [
        "reported",
        "dispatched",
        "accepted",
        "photo_after",
        "resolved",
        "closed",
    ]
    again = api.post(f"/api/work-orders/{wid}/accept", json={"by": "x"})
    assert again.status_code == 409 and "allowed: reopen" in again.json()["error"]


def test_grid_worker_report_dispatch_limits_and_overdue(make_cloud: MakeCloud, tmp_path: Path) -> None:
    svc, api = make_cloud(ingest_workers=0, media_dir=tmp_path / "media")
    api.post("/api/departments", json={"id": "roads", "name": "Roads"})
    r = api.post(
        "/api/work-orders",
        json={
            "title": "Broken cover on Elm St",
            "source": "grid_worker",
            "reporter": "grid-worker-17",
            "lat": 31.23,
            "lon": 121.47,
            "priority": "urgent",
        },
    )
    assert r.status_code == 201 and r.json()["state"] == "reported" and r.json()["department_id"] is None
    wid = r.json()["id"]
    png = io.BytesIO()
    Image.new("RGB", (64, 48)).save(png, "PNG")
    assert (
        api.post(
            f"/api/work-orders/{wid}/photos", params={"stage": "before", "by": "grid-worker-17"}, content=png.getvalue()
        ).status_code
        == 201
    )
    bad = api.post(f"/api/work-orders/{wid}/photos", params={"stage": "before", "by": "x"}, content=b"GIF89a...")
    assert bad.status_code == 422 and "not an image" in bad.json()["error"]
    big = api.post(f"/api/work-orders/{wid}/photos", params={"stage": "before", "by": "x"}, content=b"0" * (11 << 20))
    assert big.status_code == 422 and "larger than 10 MB" in big.json()["error"]
    no_dept = api.post(f"/api/work-orders/{wid}/dispatch", json={"by": "operator-li"})
    assert no_dept.status_code == 409 and "department_id" in no_dept.json()["error"]
    d = api.post(f"/api/work-orders/{wid}/dispatch", json={"by": "operator-li", "department_id": "roads"}).json()
    assert d["state"] == "dispatched" and d["department_id"] == "roads"
    assert api.get("/api/work-orders", params={"overdue": True}).json()["total"] == 0
    with svc.engine.begin() as conn:  # the SLA clock ran out
        conn.execute(update(work_orders).where(work_orders.c.id == wid).values(due_ms=now_ms() - 1))
    over = api.get("/api/work-orders", params={"overdue": True}).json()
    assert over["total"] == 1 and over["items"][0]["overdue"] is True
    assert api.post("/api/work-orders", json={"title": "x", "asset_id": "nope"}).status_code == 422


def test_subtype_filter_uses_the_registry() -> None:
    rules = load_rules("""
rules:
  - id: gas-covers
    match: {kinds: [manhole], subtypes: [gas]}
    when: {type: threshold, metric: gas_lel, above: 10}
""")
    subtype = {"node-gas": "gas", "node-sewer": "sewage"}
    e = RuleEngine(rules, lambda d: subtype.get(d, ""))
    assert e.observe_reading("s", "manhole", "node-sewer", "gas_lel", 30, 0) == []
    assert [t.rule.id for t in e.observe_reading("s", "manhole", "node-gas", "gas_lel", 30, 0)] == ["gas-covers"]


def test_report_suggests_the_nearest_asset_and_department_sla(make_cloud: MakeCloud, tmp_path: Path) -> None:
    _, api = make_cloud(ingest_workers=0, media_dir=tmp_path / "media")
    api.post("/api/departments", json={"id": "power", "name": "Power", "sla_hours": {"high": 2}})
    api.post("/api/departments", json={"id": "water", "name": "Water"})
    api.post("/api/grid-cells", json={"id": "g-0001"})
    api.post("/api/assets/import", content=CSV)
    # ~50 m from mh-B, ~160 m from mh-A
    r = api.post(
        "/api/work-orders",
        json={
            "title": "Cover rattles",
            "source": "grid_worker",
            "reporter": "gw-17",
            "lat": 31.23065,
            "lon": 121.4702,
            "priority": "high",
        },
    ).json()
    assert r["suggested_asset_id"] == "mh-B" and 40 < r["suggested_distance_m"] < 60
    assert r["state"] == "reported"
    far = api.post("/api/work-orders", json={"title": "x", "lat": 31.3, "lon": 121.5}).json()
    assert far["suggested_asset_id"] is None
    # dispatching to power applies its 2 h SLA for high priority instead of the default 24 h
    d = api.post(f"/api/work-orders/{r['id']}/dispatch", json={"by": "op", "department_id": "power"}).json()
    assert d["due_ms"] - d["created_ms"] == 2 * 3_600_000
    unknown = api.post(f"/api/work-orders/{far['id']}/dispatch", json={"by": "op", "department_id": "nope"})
    assert unknown.status_code == 409 and "no department 'nope'" in unknown.json()["error"]
