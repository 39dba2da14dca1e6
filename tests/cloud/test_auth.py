"""Console accounts: the first admin from the command line, session cookies with CSRF, login rate limiting,
roles, the audit log — and machine bearer tokens still working beside them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from fastapi.testclient import TestClient

from cloud.auth.service import MAX_ADDRESS_FAILURES, MAX_FAILURES
from tests.cloud.conftest import MakeCloud


def login(client: TestClient, username: str, password: str) -> dict[str, str]:
    r = client.post("/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"X-CSRF-Token": r.json()["csrf"]}


def test_first_admin_from_the_cli_then_sessions_csrf_roles_and_audit(make_cloud: MakeCloud, db_url: str) -> None:
    _svc, client = make_cloud(api_tokens=[])  # no token, no account: a fresh install
    closed = client.get("/api/devices")
    assert closed.status_code == 401 and "civicedge cloud create-user" in closed.json()["error"]
    assert client.post("/api/sites", json={"id": "x", "name": "x"}).status_code == 401
    assert client.get("/healthz").status_code == 200
    cli = subprocess.run(
        [sys.executable, "-m", "civicedge_cli", "cloud", "create-user", "chief", "--role", "admin", "--password-stdin"],
        input="correct horse battery\n",
        capture_output=True,
        text=True,
        env={**os.environ, "CE_DATABASE_URL": db_url},
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    r = client.post("/auth/login", json={"username": "chief", "password": "correct horse battery"})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    csrf = {"X-CSRF-Token": r.json()["csrf"]}
    assert client.get("/auth/me").json()["role"] == "admin"
    new = {"username": "ops-1", "password": "operator pass 1", "role": "operator"}
    refused = client.post("/api/users", json=new)  # the cookie alone is not enough for a change
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    assert client.post("/api/users", json=new, headers=csrf).status_code == 201
    assert client.post("/api/users", json=new, headers=csrf).status_code == 409
    # an operator may read the API but not manage users or read the audit log
    ops = TestClient(client.app)
    login(ops, "ops-1", "operator pass 1")
    assert ops.get("/api/devices").status_code == 200
    assert ops.get("/api/users").status_code == 403
    denied = ops.get("/api/audit")
    assert denied.status_code == 403 and "admin" in denied.json()["error"]
    actions = [(e["username"], e["action"]) for e in client.get("/api/audit").json()["items"]]
    assert ("cli", "user.create") in actions and ("chief", "user.create") in actions and ("ops-1", "login") in actions
    assert client.post("/auth/logout", headers=csrf).status_code == 200
    assert client.get("/auth/me").status_code == 401  # no cookie: and tokens are not configured for a browser


def test_login_limits_slow_the_guesser_and_never_lock_the_user_out(make_cloud: MakeCloud) -> None:
    svc, client = make_cloud()
    svc.auth.create_user("grid-7", "grid worker pw", "grid_worker")
    guesser = TestClient(client.app, client=("203.0.113.9", 40000))
    for _ in range(5):
        assert guesser.post("/auth/login", json={"username": "grid-7", "password": "guess"}).status_code == 401
    blocked = guesser.post("/auth/login", json={"username": "grid-7", "password": "grid worker pw"})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    # the user, from their own address, is not locked out by someone else's guesses
    assert client.post("/auth/login", json={"username": "grid-7", "password": "grid worker pw"}).status_code == 200
    # an address that tries many names is limited on its own
    sprayer = TestClient(client.app, client=("198.51.100.7", 40000))
    svc.auth.failed(["ip:198.51.100.7"] * MAX_ADDRESS_FAILURES)
    assert sprayer.post("/auth/login", json={"username": "anyone", "password": "x"}).status_code == 429


def test_each_failure_past_the_free_ones_doubles_the_wait(make_cloud: MakeCloud) -> None:
    svc, _client = make_cloud()
    key = ["user:someone@192.0.2.1"]
    waits = []
    for _ in range(MAX_FAILURES + 4):
        waits.append(svc.auth.limited(key))
        svc.auth.failed(key)
    assert waits[:MAX_FAILURES] == [0] * MAX_FAILURES
    assert svc.auth.limited(key) >= 2**4  # 1, 2, 4, 8, 16 s: growing, never a permanent lock


def test_disabling_a_user_or_changing_their_password_ends_their_sessions(make_cloud: MakeCloud) -> None:
    svc, client = make_cloud()
    svc.auth.create_user("chief", "chief password", "admin")
    svc.auth.create_user("ops-9", "operator password", "operator")
    admin = TestClient(client.app)
    csrf = {
        "X-CSRF-Token": admin.post("/auth/login", json={"username": "chief", "password": "chief password"}).json()[
            "csrf"
        ]
    }
    ops = TestClient(client.app)
    assert ops.post("/auth/login", json={"username": "ops-9", "password": "operator password"}).status_code == 200
    assert ops.get("/auth/me").status_code == 200
    r = admin.patch("/api/users/ops-9", json={"password": "a new password 1"}, headers=csrf)
    assert r.status_code == 200 and r.json()["password_changed"] is True
    assert ops.get("/auth/me").status_code == 401  # that session is gone
    assert ops.post("/auth/login", json={"username": "ops-9", "password": "operator password"}).status_code == 401
    assert ops.post("/auth/login", json={"username": "ops-9", "password": "a new password 1"}).status_code == 200
    assert admin.patch("/api/users/ops-9", json={"disabled": True}, headers=csrf).status_code == 200
    assert ops.get("/auth/me").status_code == 401
    assert ops.post("/auth/login", json={"username": "ops-9", "password": "a new password 1"}).status_code == 401
    assert admin.patch("/api/users/nobody", json={"disabled": True}, headers=csrf).status_code == 404
    actions = [e["action"] for e in admin.get("/api/audit").json()["items"]]
    assert actions.count("user.change") == 2


async def test_a_disabled_users_live_stream_ends_at_once(make_cloud: MakeCloud) -> None:
    svc, _client = make_cloud()
    sub = svc.live.subscribe(lambda _e: True, owner=42)
    other = svc.live.subscribe(lambda _e: True, owner=7)
    assert svc.live.end_user(42) == 1
    assert (await asyncio.wait_for(sub.get(), 5))["kind"] == "closed"
    assert other.queue.empty()
    sub.close()
    other.close()


def test_bearer_tokens_for_machines(make_cloud: MakeCloud) -> None:
    _svc, client = make_cloud(api_tokens=["machine-token-0001"])
    assert client.get("/api/devices").status_code == 401
    ok = client.get("/api/devices", headers={"Authorization": "Bearer machine-token-0001"})
    assert ok.status_code == 200
    assert client.get("/api/devices", headers={"Authorization": "Bearer wrong"}).status_code == 401
