"""Asset registry on SQLite and PostgreSQL: departments, grid cells, CSV import with bad rows, export."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from cloud.registry.catalog import COVER_SUBTYPES
from tests.cloud.conftest import MakeCloud

HEADER = "id,kind,subtype,department_id,grid_cell_id,lat,lon,device_id,install_date,notes"


def setup_records(api: TestClient) -> None:
    assert api.post("/api/departments", json={"id": "water", "name": "Water Authority"}).status_code == 201
    assert api.post("/api/departments", json={"id": "power", "name": "Power Grid Co."}).status_code == 201
    assert api.post("/api/grid-cells", json={"id": "g-0001", "worker_name": "Li Wei"}).status_code == 201
    assert api.post("/api/departments", json={"id": "water", "name": "again"}).status_code == 409


def test_catalog_has_20_plus_cover_subtypes(make_cloud: MakeCloud) -> None:
    _, api = make_cloud(ingest_workers=0)
    cat = api.get("/api/registry/catalog").json()
    assert len(cat["cover_subtypes"]) >= 20 and "unknown" in cat["cover_subtypes"]
    assert "manhole_cover" in cat["kinds"]


def test_import_reports_bad_rows_and_keeps_good_ones(make_cloud: MakeCloud) -> None:
    _, api = make_cloud(ingest_workers=0)
    setup_records(api)
    body = "\n".join(
        [
            HEADER,
            "mh-1,manhole_cover,sewage,water,g-0001,31.2304,121.4737,,2019-05-01,",
            "mh-2,manhole_cover,power,power,g-0001,31.2310,121.4740,mh-node-2,,under the bus stop",
            "mh-3,manhole_cover,lava,water,g-0001,31.2,121.4,,,",  # line 4: unknown subtype
            "mh-4,manhole_cover,gas,nobody,g-0001,31.2,121.4,,,",  # line 5: unknown department
            "mh-5,manhole_cover,gas,water,g-0001,95,121.4,,,",  # line 6: latitude out of range
            "mh-6,manhole_cover,gas,water,g-0001,31.2,121.4,,2019-13-01,",  # line 7: bad date
            "mh-1,manhole_cover,sewage,water,g-0001,31.2,121.4,,,",  # line 8: duplicate id in file
            "gate-a,gate,,water,,31.2,121.4,gate-01,,",
        ]
    )
    r = api.post("/api/assets/import", content=body, headers={"content-type": "text/csv"}).json()
    assert r["imported"] == 3 and r["rows"] == 8
    lines = {e["line"]: e["reason"] for e in r["errors"]}
    assert set(lines) == {4, 5, 6, 7, 8}
    assert "unknown cover subtype 'lava'" in lines[4]
    assert "no department 'nobody'" in lines[5]
    assert lines[6].startswith("lat:")
    assert lines[7].startswith("install_date:")
    assert "appears twice" in lines[8]
    page = api.get("/api/assets", params={"department": "water"}).json()
    assert {a["id"] for a in page["items"]} == {"mh-1", "gate-a"}
    assert api.get("/api/assets/mh-2").json()["device_id"] == "mh-node-2"


def test_strict_rejects_the_whole_file_and_reimport_updates(make_cloud: MakeCloud) -> None:
    _, api = make_cloud(ingest_workers=0)
    setup_records(api)
    good = f"{HEADER}\nmh-1,manhole_cover,sewage,water,g-0001,31.2,121.4,,,first\n"
    bad = good + "mh-2,manhole_cover,lava,water,,1,1,,,\n"
    refused = api.post("/api/assets/import", params={"strict": True}, content=bad)
    assert refused.status_code == 422  # a rejected file is the client's error, with the report
    r = refused.json()["error"]
    assert r["rejected_file"] and r["imported"] == 0
    assert api.get("/api/assets").json()["total"] == 0
    assert api.post("/api/assets/import", content=good).json()["imported"] == 1
    updated = good.replace("first", "second").replace("sewage", "storm_water")
    assert api.post("/api/assets/import", content=updated).json()["imported"] == 1
    a = api.get("/api/assets/mh-1").json()
    assert (a["notes"], a["subtype"]) == ("second", "storm_water")
    bad_header = "id,colour\nx,red\n"
    r = api.post("/api/assets/import", content=bad_header).json()["error"]
    assert r["rejected_file"] and "header lacks column(s) kind" in r["errors"][0]["reason"]


def test_export_round_trips_and_bulk_import(make_cloud: MakeCloud) -> None:
    _, api = make_cloud(ingest_workers=0)
    setup_records(api)
    rows = [HEADER] + [
        f"mh-{i:05d},manhole_cover,{COVER_SUBTYPES[i % len(COVER_SUBTYPES)]},{'water' if i % 2 else 'power'},"
        f"g-0001,{31 + i / 1e5:.5f},{121 + i / 1e5:.5f},,,"
        for i in range(3000)
    ]
    r = api.post("/api/assets/import", content="\n".join(rows)).json()
    assert r["imported"] == 3000 and not r["errors"]
    exported = api.get("/api/assets.csv").text
    back = list(csv.DictReader(io.StringIO(exported)))
    assert len(back) == 3000 and back[0]["id"] == "mh-00000" and back[1]["department_id"] == "water"
    assert api.get("/api/assets", params={"subtype": "gas"}).json()["total"] == sum(
        1 for i in range(3000) if COVER_SUBTYPES[i % len(COVER_SUBTYPES)] == "gas"
    )


def test_cli_import_lists_bad_lines(make_cloud: MakeCloud, db_url: str, tmp_path: Path) -> None:
    _, api = make_cloud(ingest_workers=0)
    setup_records(api)
    f = tmp_path / "assets.csv"
    f.write_text(f"{HEADER}\nmh-1,manhole_cover,sewage,water,,1,1,,,\nmh-2,manhole_cover,lava,water,,1,1,,,\n")
    env = {**os.environ, "CE_DATABASE_URL": db_url}
    out = subprocess.run(
        [sys.executable, "-m", "civicedge_cli", "cloud", "import-assets", str(f)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 1  # some rows were bad
    assert f"{f}:3: subtype" in out.stderr or f"{f}:3: unknown cover subtype" in out.stderr, out.stderr
    assert "imported 1 of 2 rows" in out.stdout
    strict = subprocess.run(
        [sys.executable, "-m", "civicedge_cli", "cloud", "import-assets", str(f), "--strict"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert strict.returncode == 1 and "rejected: nothing imported" in strict.stderr
    assert api.get("/api/assets").json()["total"] == 1


def test_confidential_assets_are_seen_only_by_their_department_and_admins(make_cloud: MakeCloud, mosquitto) -> None:  # type: ignore[no-untyped-def]
    """Playing an operator and another department: a public-security camera's cover is invisible to them in the
    registry, its CSV export, the console, the alarm list and the live channel; its own department and admins
    see it; only an admin changes which subtypes are confidential (audited)."""
    import paho.mqtt.publish as mqtt_publish
    from sqlalchemy import select

    from cloud.auth import tables as a
    from cloud.auth.scope import sees_event
    from cloud.auth.service import User
    from protocol import encode, envelope
    from protocol.messages import AlarmRaise
    from protocol.topics import topic
    from tests.cloud.conftest import register
    from tests.cloud.test_auth import login
    from tests.waits import wait

    svc, admin = make_cloud()
    setup_records(admin)
    assert admin.post("/api/departments", json={"id": "police", "name": "Public Security"}).status_code == 201
    register(admin, "riverside", "mh-sec", "mh-open")
    body = "\n".join(
        [
            HEADER,
            "cctv-1,manhole_cover,public_security_video,police,g-0001,31.2304,121.4737,mh-sec,,",
            "sew-1,manhole_cover,sewage,water,g-0001,31.2310,121.4740,mh-open,,",
        ]
    )
    assert admin.post("/api/assets/import", content=body, headers={"content-type": "text/csv"}).status_code == 200
    pw = "correct horse battery"
    svc.auth.create_user("ops", pw, "operator")
    svc.auth.create_user("pol", pw, "department", department_id="police")
    svc.auth.create_user("wat", pw, "department", department_id="water")
    clients = {}
    for name in ("ops", "pol", "wat"):
        c = TestClient(admin.app)
        login(c, name, pw)
        clients[name] = c
    for seq, dev in enumerate(("mh-sec", "mh-open"), 1):
        raise_ = AlarmRaise(key="tilt", code="cover.tilt", severity="critical", message="cover lifted")
        mqtt_publish.single(
            topic("riverside", dev, "alm"),
            encode(envelope(raise_, dev=dev, seq=seq)),
            qos=1,
            hostname=mosquitto.host,
            port=mosquitto.port,
        )
    wait(lambda: admin.get("/api/alarms").json()["total"] == 2, 10, "both alarms stored")

    def ids(c: TestClient, path: str, key: str = "id") -> set[str]:
        return {str(i[key]) for i in c.get(path).json()["items"]}

    assert ids(admin, "/api/assets") == {"cctv-1", "sew-1"}
    assert ids(clients["pol"], "/api/assets") == {"cctv-1", "sew-1"}
    assert ids(clients["ops"], "/api/assets") == ids(clients["wat"], "/api/assets") == {"sew-1"}
    assert clients["ops"].get("/api/assets/cctv-1").status_code == 404
    assert clients["pol"].get("/api/assets/cctv-1").status_code == 200
    assert "cctv-1" not in clients["ops"].get("/api/assets.csv").text
    assert "cctv-1" in admin.get("/api/assets.csv").text
    page = clients["ops"].get("/console/assets")
    assert page.status_code == 200 and "sew-1" in page.text and "cctv-1" not in page.text
    assert ids(clients["ops"], "/api/alarms", "device_id") == {"mh-open"}
    assert ids(clients["pol"], "/api/alarms", "device_id") == {"mh-sec"}
    assert ids(admin, "/api/alarms", "device_id") == {"mh-sec", "mh-open"}

    # the live channel: events are labelled from the registry, and the operator's console is not sent the secret one
    sent: list[dict] = []
    svc.live.publish = lambda *evs: sent.extend(evs)  # type: ignore[method-assign]
    svc.publish_live(
        [
            {"kind": "alarm", "event": "raised", "id": 1, "device_id": "mh-sec"},
            {"kind": "alarm", "event": "raised", "id": 2, "device_id": "mh-open"},
            {"kind": "workorder", "event": "dispatch", "id": 7, "asset_id": "cctv-1", "department_id": "police"},
        ]
    )
    ops = User(9, "ops", "operator", None, None, "en")
    pol = User(10, "pol", "department", "police", None, "en")
    assert [e["id"] for e in sent if sees_event(ops, e)] == [2]
    assert [e["id"] for e in sent if sees_event(pol, e)] == [1, 7]
    assert not sees_event(ops, {"kind": "alarm", "id": 3, "device_id": "x"})  # unlabelled: kept back

    # the device behind it is kept from the operator too: its record, readings, log and commands
    ops, csv_h = clients["ops"], {"content-type": "text/csv"}
    ops_csrf = login(ops, "ops", pw)
    assert ops.get("/api/devices/mh-sec").status_code == 404
    assert "mh-sec" not in {d["id"] for d in ops.get("/api/devices").json()["items"]}
    assert ops.get("/api/devices/mh-sec/telemetry", params={"metric": "tilt_deg"}).status_code == 404
    assert "mh-sec" not in {e["device_id"] for e in ops.get("/api/events").json()["items"]}
    command = ops.post("/api/devices/mh-sec/commands", json={"name": "ping"}, headers=ops_csrf)
    assert command.status_code == 404
    # an operator cannot overwrite, re-mark or shadow it through an import (refused rows, and the import audited)
    hostile = "\n".join(
        [
            HEADER,
            "cctv-1,manhole_cover,sewage,police,g-0001,31.2304,121.4737,mh-sec,,",  # re-mark it as sewage
            "shadow-1,manhole_cover,sewage,water,g-0001,31.2,121.4,mh-sec,,",  # an open asset on its device
            "spy-1,manhole_cover,public_security_video,water,g-0001,31.2,121.4,,,",  # a new secret one
        ]
    )
    r = ops.post("/api/assets/import", content=hostile, headers={**csv_h, **ops_csrf}).json()
    assert r["imported"] == 0 and [e["line"] for e in r["errors"]] == [2, 3, 4]
    assert ids(clients["wat"], "/api/alarms", "device_id") == {"mh-open"}  # no shadow asset lends it to water
    # a work order cannot be used to probe or locate it
    wo = ops.post("/api/work-orders", json={"title": "x", "asset_id": "cctv-1"}, headers=ops_csrf)
    unknown = ops.post("/api/work-orders", json={"title": "x", "asset_id": "nope-1"}, headers=ops_csrf)
    assert wo.status_code == unknown.status_code == 422 and "no asset" in wo.json()["error"]
    near = ops.post(
        "/api/work-orders", json={"title": "a cover rattles", "lat": 31.2304, "lon": 121.4737}, headers=ops_csrf
    )
    assert near.status_code == 201 and near.json()["suggested_asset_id"] == "sew-1"  # the open one, not cctv-1

    # only an admin decides what is confidential
    denied = clients["ops"].put("/api/registry/confidential-subtypes", json={"subtypes": []}, headers=ops_csrf)
    assert denied.status_code == 403
    assert admin.put("/api/registry/confidential-subtypes", json={"subtypes": ["Bad Name"]}).status_code == 422
    opened = admin.put("/api/registry/confidential-subtypes", json={"subtypes": ["military_confidential"]})
    assert opened.status_code == 200 and opened.json()["confidential_subtypes"] == ["military_confidential"]
    assert ids(clients["ops"], "/api/assets") == {"cctv-1", "sew-1"}
    with svc.engine.connect() as conn:
        actions = [r.action for r in conn.execute(select(a.audit_log.c.action))]
    assert "registry.confidential" in actions
