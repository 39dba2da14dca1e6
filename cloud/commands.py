"""Commands out: sign with the cloud's Ed25519 key, record, publish on ``cmd/{name}`` (QoS 1)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine, select

from cloud.db import schema as t
from cloud.ingest.store import now_ms
from protocol.codec import encode
from protocol.envelope import envelope
from protocol.messages import Body
from protocol.signing import generate_key, load_private_key, private_key_pem, sign_command
from protocol.topics import topic


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The command-signing key; created (mode 0600) on first start so a fresh install works."""
    if path.exists():
        return load_private_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    path.touch(mode=0o600)
    path.write_bytes(private_key_pem(key))
    return key


class CommandUnknownDevice(LookupError):
    pass


#: command arguments that are secrets: sent to the device, never kept readable in the command history
SECRET_ARGS = frozenset({"password", "secret", "token", "key"})


def redacted(args: dict[str, Any]) -> dict[str, Any]:
    """``args`` as the command history keeps them: secrets replaced by ``"<redacted>"``."""
    return {k: "<redacted>" if k in SECRET_ARGS else v for k, v in args.items()}


class CommandPublisher:
    def __init__(
        self,
        engine: Engine,
        key: Ed25519PrivateKey,
        host: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.engine = engine
        self.key = key
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"cloud-commands-{id(self):x}")
        if username:
            c.username_pw_set(username, password)
        c.reconnect_delay_set(1, 10)
        self.connected = threading.Event()
        c.on_connect = lambda *_a: self.connected.set()
        c.on_disconnect = lambda *_a: self.connected.clear()
        self.client = c
        self.host, self.port = host, port

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def send(self, device_id: str, name: str, args: dict[str, Any], ttl_s: float) -> dict[str, Any]:
        """Sign, store (status ``sent``) and publish; raise if the device is unknown or the broker is away."""
        with self.engine.connect() as conn:
            row = conn.execute(select(t.devices.c.site_id).where(t.devices.c.id == device_id)).first()
        if row is None:
            raise CommandUnknownDevice(device_id)
        cmd = sign_command(self.key, device=device_id, name=name, args=args, ttl_ms=int(ttl_s * 1000))
        with self.engine.begin() as conn:
            conn.execute(
                t.commands.insert().values(
                    cid=cmd.cid,
                    device_id=device_id,
                    name=name,
                    args=redacted(args),
                    deadline_ms=cmd.deadline_ms,
                    status="sent",
                    created_ms=now_ms(),
                )
            )
        if not self.connected.wait(5):
            raise ConnectionError("broker not connected")
        info = self.client.publish(
            topic(row.site_id, device_id, "cmd", name), encode(envelope(cmd, dev=device_id, seq=0)), qos=1
        )
        info.wait_for_publish(timeout=10)
        return {"cid": cmd.cid, "device_id": device_id, "name": name, "status": "sent", "deadline_ms": cmd.deadline_ms}

    def publish(self, site_id: str, device_id: str, channel: str, body: Body) -> None:
        """Publish a cloud → device message that is not a command (gallery and allow-list deltas)."""
        if not self.connected.wait(5):
            raise ConnectionError("broker not connected")
        info = self.client.publish(
            topic(site_id, device_id, channel), encode(envelope(body, dev=device_id, seq=0)), qos=1
        )
        info.wait_for_publish(timeout=10)
