"""Claim-based provisioning against a real Mosquitto locked down with the dynamic-security plugin and a TLS
listener signed by the project CA: a device gets its own identity once per claim, connects with it over TLS,
cannot act as another device, is locked out when revoked, and takes a rotated password."""

from __future__ import annotations

import asyncio
import ssl
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import update

from cloud.ingest.store import Inbound, now_ms
from cloud.provisioning.tables import claims
from protocol import encode, envelope
from protocol.messages import DeviceEvent
from protocol.topics import topic
from simulators.fleet import agent_config
from tests.cloud.conftest import SITE, Locked, MakeCloud
from tests.waits import until, wait


def _claim(api: TestClient, **kw: Any) -> str:
    r = api.post(f"/api/sites/{SITE}/claims", json=kw)
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def _provision(api: TestClient, token: str, kind: str = "gateway", **kw: Any) -> Any:
    return api.post("/provision", json={"claim": token, "kind": kind, **kw})


class Client:
    """A paho client that records what happens (for broker-side checks)."""

    def __init__(self, locked: Locked, username: str | None, password: str | None, tls: bool = True) -> None:
        self.connected = threading.Event()
        self.refused: Any = None
        self.gone = threading.Event()
        self.suback: list[Any] = []
        self.got: list[str] = []
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{username}-{id(self):x}", protocol=mqtt.MQTTv5)
        if username:
            c.username_pw_set(username, password)
        if tls:
            c.tls_set(ca_certs=str(locked.ca), cert_reqs=ssl.CERT_REQUIRED)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *_a: self.gone.set()
        c.on_subscribe = lambda _c, _u, _mid, codes, _p: self.suback.extend(codes)
        c.on_message = lambda _c, _u, msg: self.got.append(msg.topic)
        c.connect_async("127.0.0.1", locked.tls_port if tls else locked.broker.port)
        c.loop_start()
        self.c = c

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            self.refused = rc
            self.gone.set()
        else:
            self.connected.set()

    def wait_up(self) -> bool:
        wait(lambda: self.connected.is_set() or self.refused is not None, 10, "the broker's answer")
        return self.connected.is_set()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_a_claim_gives_one_device_its_identity_once(locked: Locked) -> None:
    api = locked.api
    token = _claim(api, kind="gateway", ttl_s=600)
    r = _provision(api, token, device_id="gw-gate-01")
    assert r.status_code == 200, r.text
    ident = r.json()
    assert ident["device_id"] == "gw-gate-01" and ident["site_id"] == SITE
    assert ident["mqtt"]["username"] == "gw-gate-01" and len(ident["mqtt"]["password"]) >= 24
    assert ident["mqtt"]["tls"] and ident["ca_pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert ident["command_public_key"]
    again = _provision(api, token, device_id="gw-gate-02")
    assert again.status_code == 403 and "already used" in again.json()["error"]
    wrong_kind = _provision(api, _claim(api, kind="gate"), "parking")
    assert wrong_kind.status_code == 403 and "for a gate" in wrong_kind.json()["error"]
    assert _provision(api, "ce-claim-made-up-token").status_code == 403
    stale = _claim(api, ttl_s=60)
    with locked.svc.engine.begin() as conn:  # an hour later
        conn.execute(update(claims).values(expires_ms=claims.c.expires_ms - 3_600_000))
    expired = _provision(api, stale)
    assert expired.status_code == 403 and "expired" in expired.json()["error"]
    # the device connects over TLS with what it was given; nobody gets in without an identity
    dev = Client(locked, "gw-gate-01", ident["mqtt"]["password"])
    assert dev.wait_up()
    dev.close()
    anonymous = Client(locked, None, None, tls=False)
    assert not anonymous.wait_up()
    wrong = Client(locked, "gw-gate-01", "not-the-password")
    assert not wrong.wait_up()
    devices = {d["id"]: d for d in api.get("/api/devices").json()["items"]}
    assert devices["gw-gate-01"]["kind"] == "gateway"
    with locked.svc.engine.connect() as conn:
        from sqlalchemy import select

        from cloud.auth.tables import audit_log

        actions = [r.action for r in conn.execute(select(audit_log.c.action))]
    assert actions.count("claim.create") == 3 and "device.provisioned" in actions and "claim.refused" in actions


async def test_a_provisioned_agent_runs_with_its_identity(locked: Locked, tmp_path: Path) -> None:
    from edge.agent import Agent
    from edge.config import parse_config
    from protocol.signing import generate_key, private_key_pem, public_key_b64

    own = generate_key()  # the gateway's own key: the cloud learns its public half with the claim
    (tmp_path / "signing-key.pem").write_bytes(private_key_pem(own))
    (tmp_path / "signing-key.pem").chmod(0o600)
    bad = _provision(locked.api, _claim(locked.api), signing_key="not a key")
    assert bad.status_code == 422, bad.text
    ident = _provision(locked.api, _claim(locked.api), signing_key=public_key_b64(own)).json()
    assert locked.api.get(f"/api/devices/{ident['device_id']}").json()["signing_key"] == public_key_b64(own)
    # an operator cannot turn the check off or swap the key (an admin can); nor can a claim without a key
    off = locked.api.put(f"/api/devices/{ident['device_id']}/signing-key", json={"signing_key": None})
    assert off.status_code == 403 and "admin" in off.json()["error"]
    keyless = _provision(locked.api, _claim(locked.api), device_id=ident["device_id"])
    assert keyless.status_code == 403 and "signs its messages" in keyless.json()["error"]
    secret = tmp_path / "mqtt-password"
    secret.write_text(ident["mqtt"]["password"] + "\n")
    secret.chmod(0o600)
    (tmp_path / "ca.pem").write_text(ident["ca_pem"])
    doc = agent_config(
        tmp_path,
        site=SITE,
        device=ident["device_id"],
        port=locked.tls_port,
        public_key=ident["command_public_key"],
        signing_key_file=tmp_path / "signing-key.pem",
        mqtt={
            "username": ident["mqtt"]["username"],
            "password_file": str(secret),
            "tls": {"ca_file": str(tmp_path / "ca.pem")},
        },
    )
    agent = Agent(parse_config(doc), handle_signals=False)
    task = asyncio.create_task(agent.run())
    try:

        def online() -> bool:
            return locked.api.get(f"/api/devices/{ident['device_id']}").json()["status"] == "online"

        await until(online, 20, "the provisioned agent online in the cloud", thread=True)
        # rotation: a signed command carries the new password; the broker switches once the agent has it
        old = ident["mqtt"]["password"]
        r = await asyncio.to_thread(locked.api.post, f"/api/devices/{ident['device_id']}/rotate-credentials")
        assert r.status_code == 202, r.text
        await until(lambda: secret.read_text().strip() != old, 20, "the agent to store the new password")
        assert secret.stat().st_mode & 0o777 == 0o600

        def rotated() -> bool:
            cmd = locked.api.get(f"/api/commands/{r.json()['cid']}").json()
            return cmd["status"] == "ok"

        await until(rotated, 20, "the rotation acknowledged", thread=True)  # a signed acknowledgement, taken
        history = locked.api.get(f"/api/commands/{r.json()['cid']}").json()
        assert history["args"] == {"password": "<redacted>"}  # the new password is never kept readable
        assert secret.read_text().strip() not in str(history)
        stale = Client(locked, ident["device_id"], old)
        await until(lambda: stale.refused is not None or stale.connected.is_set(), 20, "the broker's answer")
        for _ in range(50):  # the broker switches right after the acknowledgement arrives
            if stale.refused is not None:
                break
            stale.close()
            await asyncio.sleep(0.1)
            stale = Client(locked, ident["device_id"], old)
            await until(lambda s=stale: s.refused is not None or s.connected.is_set(), 20, "the broker's answer")
        assert stale.refused is not None, "the old password still works"
        stale.close()
        # after a broker restart the agent logs in with the new password
        locked.broker.restart()
        connects = agent.uplink.connects if agent.uplink else 0
        await until(lambda: agent.uplink is not None and agent.uplink.connects > connects, 30, "the agent to reconnect")
        await until(online, 20, "online again with the rotated password", thread=True)
    finally:
        agent.request_stop()
        assert await asyncio.wait_for(task, 30) in (0, 75)


def test_a_device_cannot_act_as_another(locked: Locked) -> None:
    api = locked.api
    a = _provision(api, _claim(api), device_id="gate-a").json()
    b = _provision(api, _claim(api), device_id="gate-b").json()
    ingest = Client(locked, "ce-ingest", locked.ingest_password, tls=False)
    assert ingest.wait_up()
    ingest.c.subscribe("ce/v1/#", qos=1)
    wait(lambda: ingest.suback, 10, "the ingest subscription")
    dev_a = Client(locked, "gate-a", a["mqtt"]["password"])
    assert dev_a.wait_up()
    # A asks for B's commands: refused by the broker
    dev_a.c.subscribe(f"ce/v1/{SITE}/gate-b/cmd/#", qos=1)
    wait(lambda: dev_a.suback, 10, "the SUBACK")
    assert dev_a.suback[0].is_failure, dev_a.suback
    # A publishes as B, then as itself: only its own message gets through (same connection, in order)
    spoof = encode(envelope(DeviceEvent(code="spoof"), dev="gate-b", seq=1))
    own = encode(envelope(DeviceEvent(code="own"), dev="gate-a", seq=1))
    dev_a.c.publish(topic(SITE, "gate-b", "evt"), spoof, qos=1)
    dev_a.c.publish(topic(SITE, "gate-a", "evt"), own, qos=1)
    wait(lambda: f"ce/v1/{SITE}/gate-a/evt" in ingest.got, 10, "A's own event")
    assert f"ce/v1/{SITE}/gate-b/evt" not in ingest.got
    # A may not publish commands to anyone either
    dev_a.c.publish(topic(SITE, "gate-b", "cmd", "ping"), b"{}", qos=1)
    dev_a.c.publish(topic(SITE, "gate-a", "evt"), own, qos=1)
    wait(lambda: ingest.got.count(f"ce/v1/{SITE}/gate-a/evt") == 2, 10, "A's second event")
    assert not any("/cmd" in t for t in ingest.got)
    # B's password does not work for A's name
    assert not Client(locked, "gate-a", b["mqtt"]["password"]).wait_up()
    for c in (ingest, dev_a):
        c.close()


def test_a_revoked_device_is_locked_out_and_refused(locked: Locked) -> None:
    api = locked.api
    ident = _provision(api, _claim(api), device_id="gate-r").json()
    dev = Client(locked, "gate-r", ident["mqtt"]["password"])
    assert dev.wait_up()
    assert api.post("/api/devices/gate-r/revoke").status_code == 200
    assert dev.gone.wait(10), "the broker kept the revoked device connected"
    dev.close()
    assert not Client(locked, "gate-r", ident["mqtt"]["password"]).wait_up()
    # and whatever still arrives for it (from a queue, a bridge) is refused by ingestion with the reason
    msg = encode(envelope(DeviceEvent(code="late"), dev="gate-r", seq=9))
    res = locked.svc.store.write_batch([Inbound(topic(SITE, "gate-r", "evt"), msg, now_ms())])
    assert res.dead == 1 and res.stored == 0
    dl = api.get("/api/dead-letters", params={"reason": "revoked_device"}).json()
    assert dl["total"] == 1 and dl["items"][0]["device_id"] == "gate-r"
    assert api.get("/api/devices/gate-r").json()["status"] == "revoked"


def test_a_gateway_key_is_registered_by_staff_once_per_gateway(make_cloud: MakeCloud) -> None:
    """A key copied to a second gateway would let one sign as the other: the cloud refuses it everywhere a key is
    registered; registering or forgetting one is audited."""
    from protocol.signing import generate_key, public_key_b64
    from tests.cloud.conftest import register

    _svc, api = make_cloud()
    register(api, SITE, "gate-01", "gate-02")
    key = public_key_b64(generate_key())
    assert api.put("/api/devices/gate-01/signing-key", json={"signing_key": key}).status_code == 200
    again = api.put("/api/devices/gate-02/signing-key", json={"signing_key": key})
    assert again.status_code == 409 and "gate-01" in again.json()["error"]
    twin = api.post("/api/devices", json={"id": "gate-03", "site_id": SITE, "kind": "gate", "signing_key": key})
    assert twin.status_code == 409
    bulk = api.post(
        "/api/devices/bulk", json={"devices": [{"id": "gate-04", "site_id": SITE, "kind": "gate", "signing_key": key}]}
    )
    assert bulk.status_code == 409
    assert api.put("/api/devices/gate-01/signing-key", json={"signing_key": "AAAA"}).status_code == 422
    other = public_key_b64(generate_key())
    assert api.put("/api/devices/nobody/signing-key", json={"signing_key": other}).status_code == 404
    assert api.put("/api/devices/gate-01/signing-key", json={"signing_key": None}).json()["signing_key"] is None
    actions = [e["action"] for e in api.get("/api/audit").json()["items"]]
    assert actions.count("device.signing_key") == 2
