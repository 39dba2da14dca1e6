"""The console in a real browser (Debian's Chromium through Playwright) against a running cloud, broker and
gate agent: every role's pages and rights, a device alarm arriving live and acknowledged, a work order from
dispatch to a resolved-with-photo close, department isolation, a resident letting a visitor in from a phone,
a grid worker's report, the console in Chinese, erasing a resident from the gate, CSRF and the login limit.

Screenshots of the main pages are saved under build/test-artifacts/console/."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select

from cloud.alarms import tables as alarm_tables
from cloud.db import schema as t
from cloud.gate import tables as g
from cloud.workorders.tables import work_orders
from protocol import new_id
from protocol.messages import (
    AlarmRaise,
    ElevatorFault,
    ElevatorStatus,
    LiftRequest,
    LiftResult,
    LiftStatus,
    ManholeAlarm,
)
from simulators.thermal import Scene
from tests.console.conftest import PASSWORD, USERS, Login, Stack, shot
from tests.waits import wait

# what each role lands on, a page it sees, and a page it is refused
ROLE_PAGES = {
    "admin": ("/console/", "/console/users", None),
    "li.operator": ("/console/", "/console/devices", "/console/users"),
    "water.staff": ("/console/", "/console/work-orders", "/console/devices"),
    "zhao.grid": ("/console/m/report", "/console/m/report", "/console/alarms"),
    "chen.resident": ("/console/m/home", "/console/m/home", "/console/work-orders"),
}


def _photo_bytes(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), colour).save(buf, "JPEG")
    return buf.getvalue()


def _nav(page: Any) -> set[str]:
    return {a.get_attribute("href") for a in page.query_selector_all("header.top nav a")}


def test_each_role_sees_its_own_pages_and_is_refused_the_rest(stack: Stack, login: Login, browser: Any) -> None:
    ctx = browser.new_context(base_url=stack.base)
    page = ctx.new_page()
    page.goto("/console/devices")
    assert "/console/login" in page.url  # not signed in: to the login page, then back
    shot(page, "login")
    ctx.close()
    for user, (landing, allowed, refused) in ROLE_PAGES.items():
        page = login(user, phone=USERS[user][0] in ("grid_worker", "resident"))
        assert page.url.endswith(landing), (user, page.url)
        assert page.goto(allowed).status == 200, (user, allowed)
        if refused:
            assert refused not in _nav(page), f"{user} is shown a link to {refused}"
            r = page.goto(refused)
            assert r.status == 403, (user, refused, r.status)
            assert page.locator("h1").inner_text() == "Not allowed"
    # the API answers people by role too
    page = login("water.staff")
    assert page.request.get("/api/devices").status == 403
    assert page.request.get("/api/work-orders").status == 200


def test_a_device_alarm_appears_live_and_is_acknowledged(stack: Stack, login: Login) -> None:
    page = login("li.operator")
    page.wait_for_selector("#live-state.live")  # the live channel is connected
    before = int(page.inner_text("#sev-critical"))
    stack.device_says("mh-101", ManholeAlarm(kind="gas", active=True, value=31.0, threshold=25.0))
    row = page.wait_for_selector("#alarm-rows tr.sev-critical:has-text('mh-101')")
    assert "gas" in row.inner_text()
    assert int(page.inner_text("#sev-critical")) == before + 1  # the tile counted it, no reload
    assert "mh-101" in page.inner_text("#live-events")
    shot(page, "overview")
    row.query_selector("button:has-text('Acknowledge')").click()
    page.wait_for_selector("#alarm-rows tr.state-acknowledged:has-text('mh-101')")
    with stack.svc.engine.connect() as conn:
        a = conn.execute(select(alarm_tables.alarms).where(alarm_tables.alarms.c.device_id == "mh-101")).one()
    assert (a.state, a.acked_by) == ("acknowledged", "li.operator")
    page.goto("/console/alarms")
    shot(page, "alarms")


def test_work_order_dispatched_resolved_with_a_photo_and_closed(stack: Stack, login: Login, tmp_path: Any) -> None:
    wo = stack.svc.work_orders.create(title="Cover rattles under traffic", source="operator", priority="high")
    op = login("li.operator")
    op.goto(f"/console/work-orders/{wo['id']}")
    op.select_option("select[name=department_id]", "water")
    op.click("button[name=dispatch]")
    assert op.inner_text("#wo-state") == "dispatched"

    staff = login("water.staff")
    staff.goto("/console/work-orders")
    staff.click(f"a.wocard[data-id='{wo['id']}']")
    staff.click("button[name=accept]")
    assert staff.inner_text("#wo-state") == "accepted"
    staff.click("button[name=resolve]")  # no "after" photo yet: refused with the reason
    assert "after" in staff.inner_text(".flash.err")
    before, after = tmp_path / "before.jpg", tmp_path / "after.jpg"
    before.write_bytes(_photo_bytes((120, 90, 60)))
    after.write_bytes(_photo_bytes((60, 120, 90)))
    for stage, path in (("before", before), ("after", after)):
        staff.select_option("select[name=stage]", stage)
        staff.set_input_files("input[name=photo]", str(path))
        staff.click("button[name=upload]")
        staff.wait_for_selector(f"img.photo-{stage}")
    staff.fill("input[name=note]", "Seat ring replaced")
    staff.click("button[name=resolve]")
    assert staff.inner_text("#wo-state") == "resolved"
    assert staff.query_selector("button[name=close]") is None  # closing is the command centre's

    op.reload()
    op.click("button[name=close]")
    assert op.inner_text("#wo-state") == "closed"
    assert op.query_selector("img.photo-before") and op.query_selector("img.photo-after")
    shot(op, "work-order")
    op.goto("/console/work-orders")
    shot(op, "work-orders")
    history = [h["action"] for h in stack.svc.work_orders.get(wo["id"])["history"]]
    assert [h for h in history if not h.startswith("photo")] == [
        "reported",
        "dispatched",
        "accepted",
        "resolved",
        "closed",
    ]
    assert history.count("photo_after") == 1


def test_a_department_cannot_see_another_departments_orders(stack: Stack, login: Login) -> None:
    roads = stack.svc.work_orders.create(title="Pothole by the school", source="operator", device_id="mh-202")
    water = stack.svc.work_orders.create(title="Sewer smell", source="operator", device_id="mh-101")
    assert (roads["department_id"], water["department_id"]) == ("roads", "water")
    page = login("water.staff")
    page.goto("/console/work-orders")
    board = page.inner_text(".board")
    assert "Sewer smell" in board and "Pothole by the school" not in board
    assert page.goto(f"/console/work-orders/{roads['id']}").status == 404
    listed = {w["id"] for w in page.request.get("/api/work-orders").json()["items"]}
    assert water["id"] in listed and roads["id"] not in listed
    assert page.request.get(f"/api/work-orders/{roads['id']}").status == 404


def test_a_resident_lets_a_visitor_in_from_the_phone(stack: Stack, login: Login) -> None:
    gate, board = stack.gate, stack.board
    opened = len(board.pulses(0))
    gate.camera.arrive("grace_hopper", Scene(distance_m=0.6), dwell_s=3)
    wait(lambda: any("flat number" in p for p in gate.prompts), 20, "the visitor prompt")
    call = stack.on_agent(gate.keypad("1203#"))  # the visitor rings flat 1203 and waits
    phone = login("chen.resident", phone=True)
    phone.wait_for_selector("button[name=approve]", timeout=30_000)  # the list refreshes itself
    assert phone.query_selector("img.snapshot") is not None  # the resident sees who is at the gate
    shot(phone, "phone-resident")
    phone.click("button[name=approve]")
    assert "opening" in phone.inner_text(".flash.ok")
    assert call.result(30)["result"] == "open"
    wait(lambda: len(board.pulses(0)) > opened, 20, "the door to open for the visitor")


def test_a_grid_worker_reports_an_issue_with_a_photo(stack: Stack, login: Login, tmp_path: Any) -> None:
    phone = login("zhao.grid", phone=True)
    pic = tmp_path / "cover.jpg"
    pic.write_bytes(_photo_bytes((90, 90, 90)))
    phone.fill("input[name=title]", "Cracked cover on Elm Street")
    phone.fill("textarea[name=description]", "Cracked across, rocks when stepped on")
    phone.fill("input[name=lat]", "31.2312")
    phone.fill("input[name=lon]", "121.4711")
    phone.set_input_files("input[name=photo]", str(pic))
    phone.click("#report-form button.primary")
    assert "report was filed" in phone.inner_text(".flash.ok")
    assert "Cracked cover on Elm Street" in phone.inner_text("ul.cards")
    shot(phone, "phone-grid-worker")
    with stack.svc.engine.connect() as conn:
        wo = conn.execute(select(work_orders).where(work_orders.c.title == "Cracked cover on Elm Street")).one()
    assert (wo.source, wo.reporter, wo.suggested_asset_id is not None) == ("grid_worker", "zhao.grid", True)
    assert [p["stage"] for p in stack.svc.work_orders.get(wo.id)["photos"]] == ["before"]


def test_the_overview_in_chinese_for_a_zh_cn_user(stack: Stack, login: Login) -> None:
    page = login("wang.operator")
    assert page.locator("h1").inner_text() == "总览"
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    nav = page.inner_text("header.top nav")
    assert "设备" in nav and "工单" in nav
    shot(page, "overview-zh-CN")
    page.goto("/console/work-orders")
    assert "已派单" in page.inner_text(".board")  # states from the catalog too


def test_deleting_a_resident_erases_their_face_from_the_gate(stack: Stack, login: Login) -> None:
    gate, board = stack.gate, stack.board
    page = login("admin")
    page.goto("/console/residents")
    page.on("dialog", lambda d: d.accept())
    page.click("#res-res-astronaut button[name=delete]")
    assert "deleted" in page.inner_text(".flash.ok")
    wait(lambda: len(gate.gallery) == 0, 30, "the gate to drop the resident")

    def confirmed() -> bool:
        page.reload()
        return "erased from all gates (1)" in page.inner_text("#erasures")

    wait(confirmed, 30, "the gate to confirm the erasure on the console")
    shot(page, "residents")
    with stack.svc.engine.connect() as conn:
        assert conn.execute(select(g.residents).where(g.residents.c.id == "res-astronaut")).first() is None
    opened, strangers = len(board.pulses(0)), gate.outcomes["unknown"]
    since = _last_decision_id(stack)
    gate.camera.arrive("astronaut", Scene(distance_m=0.6), dwell_s=8)  # long enough for a loaded machine
    # a stranger now: treated like any visitor (asked for a flat number), the door stays shut, no decision names her
    wait(lambda: gate.outcomes["unknown"] > strangers, 40, "the gate to treat her as a visitor")
    wait(lambda: any("flat number" in p for p in gate.prompts[-3:]), 5, "the gate to ask her for a flat number")
    assert len(board.pulses(0)) == opened
    assert _decision_after(stack, since) is None


def _last_decision_id(stack: Stack) -> int:
    c = t.messages.c
    with stack.svc.engine.connect() as conn:
        return int(
            conn.execute(select(c.id).where(c.type == "gate.decision").order_by(c.id.desc()).limit(1)).scalar() or 0
        )


def _decision_after(stack: Stack, since: int) -> dict[str, Any] | None:
    c = t.messages.c
    with stack.svc.engine.connect() as conn:
        row = conn.execute(select(c.body).where(c.type == "gate.decision", c.id > since).limit(1)).first()
    return dict(row.body) if row else None


def _tower_and_elevator_report(stack: Stack) -> None:
    """A parking tower that stored four cars and handed one back, and two elevator cars (one stuck)."""
    for lift, state, floor in (("1", "idle", 0), ("2", "moving", 3)):
        stack.device_says(
            "tower-01",
            LiftStatus(
                lift=lift,
                state=state,
                floor=floor,
                queue=int(lift) - 1,
                interlocks={"door": True, "light_curtain": lift == "1"},
            ),
            "evt",
        )
    for i, (kind, bay) in enumerate(
        (("store", "1-1-1"), ("store", "1-2-2"), ("store", "2-3-1"), ("store", "2-0-2"), ("retrieve", "1-1-1"))
    ):
        rid = new_id()
        stack.device_says(
            "tower-01",
            LiftRequest(request_id=rid, kind=kind, by="plate", subject_id=f"car{i}", bay=bay, eta_s=40.0),
            "evt",
        )
        stack.device_says(
            "tower-01", LiftResult(request_id=rid, kind=kind, ok=True, duration_s=50.0 + i, bay=bay), "evt"
        )
    stack.device_says(
        "lift-01", ElevatorStatus(car="A", floor=7, direction="up", door="closed", state="normal", load_kg=320), "evt"
    )
    stack.device_says(
        "lift-01", ElevatorStatus(car="B", floor=3, direction="idle", door="closed", state="fault"), "evt"
    )
    stack.device_says(
        "lift-01",
        ElevatorFault(
            car="B",
            code="stuck_between_floors",
            severity="critical",
            active=True,
            entrapment=True,
            floor=3,
            description="car stopped between floors",
        ),
    )


def test_screenshots_of_the_main_pages(stack: Stack, login: Login) -> None:
    _tower_and_elevator_report(stack)
    page = login("admin")

    def shows(path: str, selector: str, n: int) -> bool:
        page.goto(path)
        return len(page.query_selector_all(selector)) == n

    wait(lambda: shows("/console/parking", "table.bays td.occ", 3), 20, "three cars parked in the bay grid")
    wait(lambda: shows("/console/elevators", ".tile.car", 2), 20, "both elevator cars")
    assert "stuck_between_floors" in page.inner_text("main") or "car stopped between floors" in page.inner_text("main")
    for path, name, expect in (
        ("/console/devices", "devices", "gate-01"),
        ("/console/devices/gate-01", "device", "Send a command"),
        ("/console/assets", "assets", "cover-101"),
        ("/console/gates", "gates", "Decisions"),
        ("/console/parking", "parking", "Parking towers"),
        ("/console/elevators", "elevators", "Elevators"),
        ("/console/rules", "rules", "Rules"),
        ("/console/users", "users", "Audit log"),
    ):
        assert page.goto(path).status == 200, path
        assert expect in page.inner_text("main"), (path, expect)
        shot(page, name)
    page.goto("/console/assets")
    assert len(page.query_selector_all("#asset-map circle")) == 120  # every asset with coordinates is drawn
    # a technician's claim token from the fleet page provisions a device once
    page.goto("/console/fleet")
    page.click("button[name=claim]")
    token = page.inner_text("#claim-token")
    assert token.startswith("ce-claim-")
    shot(page, "fleet")
    first = page.request.post("/provision", data={"claim": token, "kind": "gateway", "device_id": "gw-new"})
    assert first.status == 200 and first.json()["device_id"] == "gw-new"
    assert page.request.post("/provision", data={"claim": token, "kind": "gateway"}).status == 403


def test_the_sensors_page_shows_zones_gas_falls_and_water(stack: Stack, login: Login) -> None:
    import base64

    import cv2
    from sqlalchemy import insert

    from protocol.envelope import now_ms
    from protocol.messages import AlarmRaise, MediaSnapshot, Reading, TelemetryBatch
    from simulators.facade import FacadeRenderer, scenario

    now = now_ms()
    with stack.svc.engine.begin() as conn:
        for dev, kind in (
            ("gas-b2", "gas"),
            ("fence-01", "perimeter"),
            ("facade-12", "throwing"),
            ("meters-12", "water"),
        ):
            conn.execute(
                insert(t.devices).values(
                    id=dev, site_id="riverside", kind=kind, name=dev, status="online", created_ms=now
                )
            )

    def readings(*rs: tuple[str, float, int]) -> TelemetryBatch:
        return TelemetryBatch(readings=[Reading(metric=m, value=v, ts=ts) for m, v, ts in rs])

    stack.device_says("gas-b2", readings(("gas.plant-b2.lel", 28.0, now)), "tele")
    stack.device_says(
        "gas-b2", AlarmRaise(key="gas.plant-b2.high", code="high", severity="critical", message="gas 28 %LEL")
    )
    stack.device_says(
        "fence-01", readings(("perimeter.north.armed", 1.0, now), ("perimeter.yard.armed", 0.0, now)), "tele"
    )
    sc = scenario(3, 4, falls=1)
    r = FacadeRenderer(sc)
    strip = cv2.resize(__import__("numpy").hstack([r.frame(i) for i in range(10, 60, 10)]), None, fx=0.4, fy=0.4)
    ok, buf = cv2.imencode(".jpg", strip[:, :, ::-1])
    assert ok
    stack.device_says(
        "facade-12",
        MediaSnapshot(
            ref="throwing-south-1",
            content_type="image/jpeg",
            data_b64=base64.b64encode(buf.tobytes()).decode(),
            purpose="throwing",
        ),
        "evt",
    )

    def fall(n: int, floors: tuple[int, int]) -> AlarmRaise:
        details = {"facade": "block-12-south", "floor_low": floors[0], "floor_high": floors[1]}
        return AlarmRaise(
            key=f"throwing.south.{n}",
            code="throwing",
            severity="critical",
            message="object falling",
            details={**details, "frames_ref": f"throwing-south-{n}"},
        )

    stack.device_says("facade-12", fall(1, (11, 14)))
    stack.device_says("facade-12", fall(2, (3, 5)))  # a second fall whose frames are still on the gateway
    hours = [
        ("water.m1.hourly_l", v, now - (24 - h) * 3_600_000)
        for h, v in enumerate(
            [0, 0, 0, 0, 0, 4, 60, 180, 90, 20, 10, 12, 25, 18, 9, 14, 22, 35, 80, 150, 110, 40, 10, 2]
        )
    ]
    stack.device_says("meters-12", readings(*hours), "tele")
    stack.device_says(
        "fence-01",
        AlarmRaise(
            key="perimeter.north.intrusion",
            code="intrusion",
            severity="critical",
            message="intrusion",
            details={"zone": "north"},
        ),
    )
    page = login("li.operator")

    def shown() -> bool:
        page.goto("/console/sensors")
        text = page.inner_text("main")
        filled = all(s in text for s in ("plant-b2", "north", "yard", "floors 11–14", "floors 3–5", "m1"))
        return filled and page.query_selector("figure.throw img.strip") is not None  # the first strip stored

    wait(shown, 20, "every panel filled")
    assert page.query_selector(".tile.zone.st-alarm h2").inner_text().startswith("north")
    assert page.query_selector(".tile.zone.st-disarmed h2").inner_text().startswith("yard")
    assert page.query_selector(".badge.level-high").inner_text() == "high"
    assert len(page.query_selector_all("figure.throw img.strip")) == 1  # no broken image for the second fall
    assert page.query_selector("figure.throw p.uploading").inner_text() == "frames on their way from the gateway"
    strip_img = page.wait_for_selector("figure.throw img.strip")
    wait(lambda: page.evaluate("(img) => img.complete && img.naturalWidth > 0", strip_img), 10, "the frame strip")
    page.wait_for_selector("figure.chart canvas")  # the water chart drawn
    shot(page, "sensors")


XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


def test_hostile_text_from_devices_and_people_is_shown_as_text(stack: Stack, login: Login) -> None:
    """A device's alarm text and key and a work order's title and description, all hostile: every
    page that shows them shows the text, and no script runs (escaping first; the CSP forbids inline script too)."""
    stack.device_says("mh-101", AlarmRaise(key=f"x:{XSS}"[:128], code="gas", severity="critical", message=XSS))
    wo = stack.svc.work_orders.create(title=XSS, source="operator", description=XSS)
    page = login("li.operator")
    page.on("dialog", lambda d: (d.dismiss(), pytest.fail(f"a dialog opened: {d.message}")))
    row = page.wait_for_selector(f"#alarm-rows tr:has-text('{XSS[:20]}')")  # live, through the WebSocket
    assert XSS in row.inner_text()
    for path in ("/console/", "/console/alarms", "/console/work-orders", f"/console/work-orders/{wo['id']}"):
        r = page.goto(path)
        assert r is not None and "script-src 'self'" in r.headers["content-security-policy"]
        assert XSS in page.inner_text("main"), path
        assert page.evaluate("() => window.__xss") is None, path
    page.goto("/console/alarms")
    page.click(f"tr:has-text('{XSS[:20]}') button:has-text('Acknowledge')")
    page.wait_for_selector(f"tr.state-acknowledged:has-text('{XSS[:20]}')")
    assert page.evaluate("() => window.__xss") is None


def test_csrf_is_required_and_logins_are_rate_limited(stack: Stack, login: Login, browser: Any) -> None:
    # last in the module: it uses up the login limit the other tests log in under
    page = login("li.operator")
    with stack.svc.engine.connect() as conn:
        alarm_id = conn.execute(select(alarm_tables.alarms.c.id).limit(1)).scalar_one()
    forged = page.request.post(f"/console/alarms/{alarm_id}/clear", form={"csrf": "forged"})
    assert forged.status == 403
    missing = page.request.post(f"/api/alarms/{alarm_id}/clear", data={"note": "x"})
    assert missing.status == 403 and "CSRF" in missing.json()["error"]
    with stack.svc.engine.connect() as conn:
        assert (
            conn.execute(select(alarm_tables.alarms.c.state).where(alarm_tables.alarms.c.id == alarm_id)).scalar_one()
            != "cleared"
        )

    ctx = browser.new_context(base_url=stack.base)
    p = ctx.new_page()
    for _ in range(5):
        p.goto("/console/login")
        p.fill("input[name=username]", "li.operator")
        p.fill("input[name=password]", "not the password")
        p.click("button.primary")
        assert "Wrong user name or password" in p.inner_text(".flash.err")
    p.fill("input[name=username]", "li.operator")
    p.fill("input[name=password]", PASSWORD)  # even the right password waits now
    with p.expect_response(re.compile(r"/console/login$")) as resp:
        p.click("button.primary")
    assert resp.value.status == 429
    assert "Too many failed logins" in p.inner_text(".flash.err")
    ctx.close()
