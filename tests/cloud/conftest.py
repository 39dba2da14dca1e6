from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from cloud.app import create_app
from cloud.provisioning.broker import write_broker_files
from cloud.service import CloudService
from cloud.settings import Settings
from protocol.signing import generate_key, private_key_pem, public_key_b64
from simulators.services import Mosquitto, free_port
from tests.conftest import PG_ADMIN_URL, _require, serve


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database per test, on SQLite and on the machine's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cloud.db'}"
        return
    name = f"ce_cloud_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc} (make test starts it)", pytrace=False)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


SITE = "riverside"
TOKEN = "technician-tools-token"
#: the admin token a test cloud answers (the API is closed until a token or an account exists)
ADMIN_TOKEN = "test-admin-token-0000000001"
MakeCloud = Callable[..., tuple[CloudService, TestClient]]


@pytest.fixture
def make_cloud(db_url: str, mosquitto: Mosquitto, tmp_path: Path) -> Iterator[MakeCloud]:
    """A running cloud node (API through TestClient, ingestion worker on the test broker)."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> tuple[CloudService, TestClient]:
        defaults: dict[str, Any] = {
            "database_url": db_url,
            "broker_url": f"mqtt://{mosquitto.host}:{mosquitto.port}",
            "command_key_file": tmp_path / "key.pem",
            "update_key_file": tmp_path / "update-key.pem",
            "media_dir": tmp_path / "media",
            "ingest_batch_ms": 20,
        }
        machine = "api_tokens" not in overrides  # a test that sets its own tokens speaks for itself
        if machine:
            defaults["api_tokens"] = [f"admin:{ADMIN_TOKEN}"]
        settings = Settings(_env_file=None, **(defaults | overrides))  # type: ignore[call-arg]
        svc = CloudService(settings)
        client = TestClient(
            create_app(service=svc), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"} if machine else None
        )
        client.__enter__()
        clients.append(client)
        assert all(w.connected.wait(10) for w in svc.workers)
        return svc, client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def register(client: TestClient, site: str = "riverside", *devices: str) -> None:
    assert client.post("/api/sites", json={"id": site, "name": site.title()}).status_code == 201
    for d in devices:
        r = client.post("/api/devices", json={"id": d, "site_id": site, "kind": "gate"})
        assert r.status_code == 201, r.text


def device_key(client: TestClient, device: str, save_to: Path | None = None) -> Ed25519PrivateKey:
    """Give a registered gateway its own signing key, as a technician does for one registered by hand
    (``civicedge edge keygen``, then ``PUT /api/devices/{id}/signing-key``); ``save_to``: the agent's key file."""
    key = generate_key()
    r = client.put(f"/api/devices/{device}/signing-key", json={"signing_key": public_key_b64(key)})
    assert r.status_code == 200, r.text
    if save_to is not None:
        save_to.write_bytes(private_key_pem(key))
        save_to.chmod(0o600)
    return key


@dataclass
class Locked:
    broker: Mosquitto
    tls_port: int
    ca: Path
    svc: CloudService
    api: TestClient  # signed in as an operator
    ingest_password: str
    url: str  # the same cloud over HTTP (for tools); machines use the bearer token TOKEN


@pytest.fixture
def locked(tmp_path: Path, db_url: str) -> Iterator[Locked]:
    tls_port = free_port()
    files = write_broker_files(tmp_path / "broker", host="127.0.0.1", tls_port=tls_port)
    broker = _require(
        lambda: Mosquitto(workdir=tmp_path / "mosquitto", security=files["security"], extra_conf=files["tls"])
    )
    broker.start()
    settings = Settings(
        database_url=db_url,
        broker_url=f"mqtt://ce-cloud:{files['cloud_password']}@127.0.0.1:{broker.port}",
        ingest_broker_url=f"mqtt://ce-ingest:{files['ingest_password']}@127.0.0.1:{broker.port}",
        broker_dynsec=True,
        broker_ca_file=files["ca"],
        public_broker_port=tls_port,
        command_key_file=tmp_path / "key.pem",
        update_key_file=tmp_path / "update-key.pem",
        media_dir=tmp_path / "media",
        ingest_batch_ms=20,
        api_tokens=[TOKEN],
        _env_file=None,  # type: ignore[call-arg]
    )
    svc = CloudService(settings)
    app = create_app(service=svc)
    api = TestClient(app)
    api.__enter__()
    try:
        assert all(w.connected.wait(10) for w in svc.workers), "ingestion could not log in to the locked broker"
        svc.auth.create_user("tech", "correct horse battery", "operator")
        r = api.post("/auth/login", json={"username": "tech", "password": "correct horse battery"})
        api.headers["X-CSRF-Token"] = r.json()["csrf"]
        assert api.post("/api/sites", json={"id": SITE, "name": "Riverside"}).status_code == 201
        with serve(app, lifespan="off") as url:
            yield Locked(broker, tls_port, files["ca"], svc, api, files["ingest_password"], url)
    finally:
        api.__exit__(None, None, None)
        broker.close()
