"""Boards going offline, through a real Mosquitto into the cloud (SQLite and PostgreSQL): each manhole node's
last will is a fresh message (its own id, made at every connection), so the cloud records every node that goes
offline, and the same node going offline twice, instead of keeping the first will it ever saw."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from cloud.db import schema as t
from simulators.firmware import FirmwareBoard
from simulators.services import Mosquitto
from tests.cloud.conftest import MakeCloud
from tests.waits import wait


def _node(device: str, broker: Mosquitto) -> FirmwareBoard:
    return FirmwareBoard(
        "manhole",
        {
            "device": device,
            "broker_host": broker.host,
            "broker_port": broker.port,
            "sample_s": 0.5,
            "heartbeat_s": 60,
            "keepalive_s": 2,
        },
        sensors={"ax_mg": 0, "ay_mg": 0, "az_mg": 1000, "water_mv": 100, "gas_mv": 50, "battery_mv": 1900},
    )


def test_every_node_that_dies_is_recorded_offline(
    make_cloud: MakeCloud, mosquitto: Mosquitto, micropython: Any
) -> None:
    svc, api = make_cloud()
    assert api.post("/api/sites", json={"id": "riverside", "name": "Riverside"}).status_code == 201
    for d in ("mh-0042", "mh-0043"):
        assert api.post("/api/devices", json={"id": d, "site_id": "riverside", "kind": "manhole"}).status_code == 201

    def status(d: str) -> str:
        return str(api.get(f"/api/devices/{d}").json()["status"])

    def offline_wills() -> list[tuple[str, str]]:
        with svc.engine.connect() as conn:
            rows = conn.execute(
                select(t.messages.c.device_id, t.messages.c.msg_id).where(t.messages.c.type == "state")
            ).all()
        return [(r.device_id, r.msg_id) for r in rows]

    nodes = {d: _node(d, mosquitto) for d in ("mh-0042", "mh-0043")}
    try:
        for d in nodes:
            wait(lambda d=d: status(d) == "online", 15, f"{d} online")
        nodes["mh-0042"].close()  # power gone: no DISCONNECT; the broker sends the will after 1.5 keepalives
        wait(lambda: status("mh-0042") == "offline", 15, "the first node offline")
        nodes["mh-0043"].close()
        wait(lambda: status("mh-0043") == "offline", 15, "the second node offline, too")
        again = _node("mh-0042", mosquitto)  # the first node comes back, then dies again
        nodes["mh-0042"] = again
        wait(lambda: status("mh-0042") == "online", 15, "the first node back")
        again.close()
        wait(lambda: status("mh-0042") == "offline", 15, "the first node offline a second time")
    finally:
        for n in nodes.values():
            n.close()
    ids = [m for _d, m in offline_wills()]
    assert len(ids) == len(set(ids))  # every state message its own
