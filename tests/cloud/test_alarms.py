"""Alarm dedup and lifecycle through real ingestion, on SQLite and PostgreSQL."""

from __future__ import annotations

import aiomqtt

from protocol import encode, envelope, topic
from protocol.messages import AlarmClear, AlarmRaise, ManholeAlarm
from simulators.services import Mosquitto
from tests.cloud.conftest import MakeCloud, register
from tests.cloud.test_ingest import until


async def test_repeats_count_one_open_alarm_and_lifecycle_is_recorded(
    make_cloud: MakeCloud, mosquitto: Mosquitto
) -> None:
    _, api = make_cloud()
    register(api, "riverside", "mh-001")
    alm = topic("riverside", "mh-001", "alm")
    raise_ = [
        encode(envelope(ManholeAlarm(kind="tilt", active=True, value=6.0 + i, threshold=5.0), dev="mh-001", seq=i + 1))
        for i in range(3)
    ]
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as c:
        for p in raise_:
            await c.publish(alm, p, qos=1)
    await until(
        lambda: (
            api.get("/api/alarms", params={"state": "open"}).json()["total"] == 1
            and api.get("/api/alarms").json()["items"][0]["occurrences"] == 3
        )
    )
    alarm = api.get("/api/alarms").json()["items"][0]
    assert alarm["key"] == "manhole.tilt" and alarm["severity"] == "major" and alarm["message"].startswith("tilt: 8")
    assert api.get("/api/devices/mh-001").json()["open_alarms"] == 1

    acked = api.post(f"/api/alarms/{alarm['id']}/ack", json={"by": "operator-zhang", "note": "crew on the way"})
    assert acked.status_code == 200 and acked.json()["state"] == "acknowledged"
    again = api.post(f"/api/alarms/{alarm['id']}/ack", json={"by": "someone-else"})
    assert again.status_code == 409 and "operator-zhang" in again.json()["error"]

    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as c:
        await c.publish(
            alm,
            encode(envelope(ManholeAlarm(kind="tilt", active=False, value=1.0, threshold=5.0), dev="mh-001", seq=9)),
            qos=1,
        )
    await until(lambda: api.get("/api/alarms", params={"state": "cleared"}).json()["total"] == 1)
    cleared = api.get("/api/alarms").json()["items"][0]
    assert cleared["cleared_by"] == "device" and cleared["acked_by"] == "operator-zhang"
    history = [(h["action"], h["by"]) for h in api.get(f"/api/alarms/{alarm['id']}/history").json()]
    assert history == [
        ("raised", "device"),
        ("repeated", "device"),
        ("repeated", "device"),
        ("acknowledged", "operator-zhang"),
        ("cleared", "device"),
    ]
    assert api.post(f"/api/alarms/{alarm['id']}/clear", json={"by": "x"}).status_code == 409
    assert api.post("/api/alarms/99999/ack", json={"by": "x"}).status_code == 404


async def test_raise_after_clear_opens_a_new_alarm_and_manual_clear(
    make_cloud: MakeCloud, mosquitto: Mosquitto
) -> None:
    _, api = make_cloud()
    register(api, "riverside", "gate-01")
    alm = topic("riverside", "gate-01", "alm")
    body = AlarmRaise(key="door_held:a1", code="door_held", severity="major", message="door held open")
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as c:
        await c.publish(alm, encode(envelope(body, dev="gate-01", seq=1)), qos=1)
        await c.publish(
            alm, encode(envelope(AlarmClear(key="door_held:a1", code="door_held"), dev="gate-01", seq=2)), qos=1
        )
        await c.publish(alm, encode(envelope(body, dev="gate-01", seq=3)), qos=1)
    await until(lambda: api.get("/api/alarms").json()["total"] == 2)
    states = sorted(a["state"] for a in api.get("/api/alarms").json()["items"])
    assert states == ["active", "cleared"]
    open_id = api.get("/api/alarms", params={"state": "open"}).json()["items"][0]["id"]
    r = api.post(f"/api/alarms/{open_id}/clear", json={"by": "operator-li", "note": "door repaired"})
    assert r.json()["state"] == "cleared" and r.json()["cleared_by"] == "operator-li"
    assert api.get("/api/alarms", params={"state": "open"}).json()["total"] == 0
