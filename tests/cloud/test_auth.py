"""Console accounts: the first admin from the command line, session cookies with CSRF, login rate limiting,
roles, the audit log — and machine bearer tokens still working beside them."""

from __future__ import annotations

import os
import subprocess
import sys

from fastapi.testclient import TestClient

from tests.cloud.conftest import MakeCloud


def login(client: TestClient, username: str, password: str) -> dict[str, str]:
    r = client.post("/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"X-CSRF-Token": r.json()["csrf"]}


def test_first_admin_from_the_cli_then_sessions_csrf_roles_and_audit(make_cloud: MakeCloud, db_url: str) -> None:
    _svc, client = make_cloud()
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


def test_login_rate_limit(make_cloud: MakeCloud) -> None:
    svc, client = make_cloud()
    svc.auth.create_user("grid-7", "grid worker pw", "grid_worker")
    for _ in range(5):
        assert client.post("/auth/login", json={"username": "grid-7", "password": "guess"}).status_code == 401
    blocked = client.post("/auth/login", json={"username": "grid-7", "password": "grid worker pw"})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    unknown = client.post("/auth/login", json={"username": "nobody", "password": "x"})
    assert unknown.status_code == 429  # the same client address is limited too


def test_bearer_tokens_for_machines(make_cloud: MakeCloud) -> None:
    _svc, client = make_cloud(api_tokens=["machine-token-0001"])
    assert client.get("/api/devices").status_code == 401
    ok = client.get("/api/devices", headers={"Authorization": "Bearer machine-token-0001"})
    assert ok.status_code == 200
    assert client.get("/api/devices", headers={"Authorization": "Bearer wrong"}).status_code == 401
