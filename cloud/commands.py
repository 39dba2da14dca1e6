"""Cloud → device: commands signed with the command key, recorded and published on ``cmd/{name}`` (QoS 1);
documents (desired config, gallery and allow-list deltas) signed with the document key for the device they are
addressed to (``protocol.signing``)."""

from __future__ import annotations

import secrets
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
from protocol.messages import Body, ConfigDocument
from protocol.signing import generate_key, load_private_key, private_key_pem, sign_command, sign_document
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


def load_or_create_secret(path: Path) -> bytes:
    """32 random bytes kept in ``path`` (created mode 0600 on first use)."""
    if path.exists():
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    path.parent.mkdir(parents=True, exist_ok=True)
    data = secrets.token_bytes(32)
    path.touch(mode=0o600)
    path.write_bytes(data)
    return data


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
        document_key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.engine = engine
        self.key = key
        self.document_key = document_key
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

    def publish(self, site_id: str, device_id: str, channel: str, body: Body, retain: bool = False) -> None:
        """Publish a cloud → device document (gallery and allow-list deltas, desired config), signed with the
        document key for ``device_id``."""
        if "sig" in type(body).model_fields:
            if self.document_key is None:
                raise RuntimeError("no document key: documents would be refused by every device")
            body = sign_document(self.document_key, body, device_id)
        if not self.connected.wait(5):
            raise ConnectionError("broker not connected")
        info = self.client.publish(
            topic(site_id, device_id, channel), encode(envelope(body, dev=device_id, seq=0)), qos=1, retain=retain
        )
        info.wait_for_publish(timeout=10)

    def publish_config(self, site_id: str, device_id: str, revision: int, doc: dict[str, Any]) -> None:
        """The desired config of a device (retained on ``cfg``; the device applies a newer revision only)."""
        self.publish(site_id, device_id, "cfg", ConfigDocument(revision=revision, doc=doc), retain=True)
