"""The command centre's pages: overview, devices, alarms, work orders, assets (with a drawn map), gates and
residents, parking towers, elevators, rules, users and the audit log. Each page asks cloud.auth.scope what
the user may see; forms post to cloud.actions through :func:`cloud.console.app.act`."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup
from sqlalchemy import func, select

from cloud import actions
from cloud.api.deps import Service
from cloud.auth.scope import alarm_filter, asset_filter, can, device_filter, work_order_filter
from cloud.console.app import Session, act, check_csrf
from cloud.console.render import SEVERITIES, WO_STATES, render
from cloud.console.shapes import asset_map, bay_grid
from cloud.db import schema as t
from cloud.db import schema_auth as a
from cloud.db import schema_gate as g
from cloud.db.schema_registry import assets, departments, grid_cells
from cloud.db.schema_workorders import work_orders
from cloud.ingest.store import now_ms

router = APIRouter(prefix="/console", include_in_schema=False)
Csrf = Annotated[str | None, Form()]
COMMANDS = ("ping", "outbox-stats", "reboot-agent")


def rows_of(result: Any) -> list[dict[str, Any]]:
    """Query rows as plain dicts (for the templates)."""
    return [dict(r._mapping) for r in result]


def _open_alarms(svc: Any, user: Any, limit: int = 50) -> list[dict[str, Any]]:
    c = t.alarms.c
    with svc.engine.connect() as conn:
        return rows_of(
            conn.execute(
                select(t.alarms)
                .where(c.state != "cleared", alarm_filter(user))
                .order_by(c.raised_ms.desc(), c.id.desc())
                .limit(limit)
            )
        )


# --- overview ----------------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, svc: Service, page: Session) -> HTMLResponse:
    page.need("overview")
    user = page.user
    with svc.engine.connect() as conn:
        devices = (
            {
                (r.kind, r.status): r.n
                for r in conn.execute(
                    select(t.devices.c.kind, t.devices.c.status, func.count().label("n")).group_by(
                        t.devices.c.kind, t.devices.c.status
                    )
                )
            }
            if can(user, "devices.view")
            else {}
        )
        sev: dict[str, int] = dict(
            conn.execute(
                select(t.alarms.c.severity, func.count())
                .where(t.alarms.c.state != "cleared", alarm_filter(user))
                .group_by(t.alarms.c.severity)
            ).all()
        )
        wo: dict[str, int] = dict(
            conn.execute(
                select(work_orders.c.state, func.count()).where(work_order_filter(user)).group_by(work_orders.c.state)
            ).all()
        )
        overdue = conn.execute(
            select(func.count()).where(
                work_order_filter(user),
                work_orders.c.due_ms < now_ms(),
                work_orders.c.state.not_in(["resolved", "closed"]),
            )
        ).scalar_one()
    status = Counter[str]()
    kinds: dict[str, Counter[str]] = defaultdict(Counter)
    for (kind, st), n in devices.items():
        status[st] += n
        kinds[kind][st] += n
    return render(
        request,
        "overview.html",
        user,
        page.csrf,
        device_status=status,
        kinds=dict(sorted(kinds.items())),
        severities={s: sev.get(s, 0) for s in SEVERITIES},
        work={s: wo.get(s, 0) for s in WO_STATES},
        overdue=overdue,
        alarms=_open_alarms(svc, user, 20),
    )


# --- devices -----------------------------------------------------------------------------------------------


def _outbox_depth(health: dict[str, Any] | None) -> int | None:
    depth = (health or {}).get("outbox_depth")
    return sum(depth.values()) if isinstance(depth, dict) else None


@router.get("/devices", response_class=HTMLResponse)
def devices(
    request: Request, svc: Service, page: Session, site: str = "", kind: str = "", status: str = ""
) -> HTMLResponse:
    page.need("devices.view")
    c = t.devices.c
    q = select(t.devices).where(device_filter(page.user)).order_by(c.site_id, c.id)
    for col, v in ((c.site_id, site), (c.kind, kind), (c.status, status)):
        if v:
            q = q.where(col == v)
    with svc.engine.connect() as conn:
        rows = rows_of(conn.execute(q.limit(500)))
        sites = [r[0] for r in conn.execute(select(t.sites.c.id).order_by(t.sites.c.id))]
        kinds = [r[0] for r in conn.execute(select(c.kind).distinct().order_by(c.kind))]
    for r in rows:
        r["outbox"] = _outbox_depth(r["health"])
    return render(
        request,
        "devices.html",
        page.user,
        page.csrf,
        devices=rows,
        sites=sites,
        kinds=kinds,
        sel={"site": site, "kind": kind, "status": status},
    )


@router.get("/devices/{device_id}", response_class=HTMLResponse)
def device(request: Request, svc: Service, page: Session, device_id: str) -> HTMLResponse:
    page.need("devices.view")
    with svc.engine.connect() as conn:
        row = conn.execute(select(t.devices).where(t.devices.c.id == device_id)).first()
        if row is None:
            return render(request, "notfound.html", page.user, page.csrf, status=404, what=device_id)
        dev = dict(row._mapping)
        metrics = [
            r[0]
            for r in conn.execute(
                select(t.telemetry.c.metric)
                .where(t.telemetry.c.device_id == device_id, t.telemetry.c.ts >= now_ms() - 86_400_000)
                .distinct()
                .order_by(t.telemetry.c.metric)
            )
        ]
        cmds = rows_of(
            conn.execute(
                select(t.commands)
                .where(t.commands.c.device_id == device_id)
                .order_by(t.commands.c.created_ms.desc())
                .limit(10)
            )
        )
        alarms = rows_of(
            conn.execute(
                select(t.alarms)
                .where(t.alarms.c.device_id == device_id)
                .order_by(t.alarms.c.raised_ms.desc())
                .limit(10)
            )
        )
    dev["outbox"] = _outbox_depth(dev["health"])
    return render(
        request,
        "device.html",
        page.user,
        page.csrf,
        d=dev,
        metrics=metrics,
        commands=cmds,
        alarms=alarms,
        command_names=COMMANDS,
    )


@router.post("/devices/{device_id}/command")
def device_command(
    request: Request, svc: Service, page: Session, device_id: str, name: Annotated[str, Form()], csrf: Csrf = None
) -> RedirectResponse:
    return act(
        request,
        page,
        csrf,
        f"/console/devices/{device_id}",
        lambda: actions.send_command(svc, page.user, device_id, name, {}),
        "Command sent.",
    )


# --- alarms ------------------------------------------------------------------------------------------------


@router.get("/alarms", response_class=HTMLResponse)
def alarms(request: Request, svc: Service, page: Session, state: str = "open") -> HTMLResponse:
    page.need("alarms.view")
    c = t.alarms.c
    q = select(t.alarms).where(alarm_filter(page.user)).order_by(c.raised_ms.desc(), c.id.desc()).limit(200)
    if state == "open":
        q = q.where(c.state != "cleared")
    elif state == "cleared":
        q = q.where(c.state == "cleared")
    with svc.engine.connect() as conn:
        rows = rows_of(conn.execute(q))
    return render(request, "alarms.html", page.user, page.csrf, alarms=rows, state=state)


@router.get("/alarms/{alarm_id}", response_class=HTMLResponse)
def alarm(request: Request, svc: Service, page: Session, alarm_id: int) -> HTMLResponse:
    page.need("alarms.view")
    with svc.engine.connect() as conn:
        row = conn.execute(select(t.alarms).where(t.alarms.c.id == alarm_id, alarm_filter(page.user))).first()
        if row is None:
            return render(request, "notfound.html", page.user, page.csrf, status=404, what=f"#{alarm_id}")
        hist = rows_of(
            conn.execute(
                select(t.alarm_history).where(t.alarm_history.c.alarm_id == alarm_id).order_by(t.alarm_history.c.id)
            )
        )
    return render(request, "alarm.html", page.user, page.csrf, a=dict(row._mapping), history=hist)


@router.post("/alarms/{alarm_id}/{action}", response_model=None)
def alarm_action(request: Request, svc: Service, page: Session, alarm_id: int, action: str, csrf: Csrf = None) -> Any:
    """Ack / clear; from htmx the alarm's row comes back in place, from a plain form the page reloads."""
    what = {"ack": "acknowledged", "clear": "cleared"}.get(action)
    if what is None:
        return render(request, "notfound.html", page.user, page.csrf, status=404, what=f"alarm action {action}")
    if request.headers.get("HX-Request"):
        check_csrf(request, page, csrf)
        try:
            row = actions.alarm_act(svc, page.user, alarm_id, what)
        except actions.ActionError as exc:
            # the error names things people and devices chose (an operator's name, an alarm's text): text, not HTML
            return HTMLResponse(
                Markup('<tr><td colspan="7" class="err">{}</td></tr>').format(str(exc)), status_code=200
            )
        return render(request, "_alarm_row.html", page.user, page.csrf, a=row)
    return act(
        request, page, csrf, "/console/alarms", lambda: actions.alarm_act(svc, page.user, alarm_id, what), "Done."
    )


# --- work orders -------------------------------------------------------------------------------------------


@router.get("/work-orders", response_class=HTMLResponse)
def work_board(request: Request, svc: Service, page: Session, department: str = "") -> HTMLResponse:
    page.need("workorders.view")
    c = work_orders.c
    q = select(work_orders).where(work_order_filter(page.user)).order_by(c.due_ms).limit(500)
    if department:
        q = q.where(c.department_id == department)
    with svc.engine.connect() as conn:
        rows = rows_of(conn.execute(q))
        depts = rows_of(conn.execute(select(departments.c.id, departments.c.name).order_by(departments.c.id)))
    now = now_ms()
    board: dict[str, list[dict[str, Any]]] = {s: [] for s in WO_STATES}
    for r in rows:
        r["overdue"] = r["state"] not in ("resolved", "closed") and r["due_ms"] < now
        board.setdefault(r["state"], []).append(r)
    return render(
        request, "workorders.html", page.user, page.csrf, board=board, departments=depts, department=department
    )


@router.get("/work-orders/{wo_id}", response_class=HTMLResponse)
def work_order(request: Request, svc: Service, page: Session, wo_id: int) -> HTMLResponse:
    try:
        wo = actions.work_order(svc, page.user, wo_id)
    except actions.Forbidden as exc:
        raise_forbidden(page, str(exc))
    except actions.NotFound:
        return render(request, "notfound.html", page.user, page.csrf, status=404, what=f"#{wo_id}")
    with svc.engine.connect() as conn:
        depts = rows_of(conn.execute(select(departments.c.id, departments.c.name).order_by(departments.c.id)))
    wo["overdue"] = wo["state"] not in ("resolved", "closed") and wo["due_ms"] < now_ms()
    return render(request, "workorder.html", page.user, page.csrf, wo=wo, departments=depts)


def raise_forbidden(page: Any, message: str) -> None:
    from cloud.console.app import PageForbidden

    raise PageForbidden(page.user, page.csrf, message)


@router.post("/work-orders/{wo_id}/photo")
async def work_order_photo(
    request: Request,
    svc: Service,
    page: Session,
    wo_id: int,
    stage: Annotated[str, Form()],
    photo: Annotated[UploadFile, File()],
    csrf: Csrf = None,
) -> RedirectResponse:
    data = await photo.read()
    return act(
        request,
        page,
        csrf,
        f"/console/work-orders/{wo_id}",
        lambda: actions.work_order_photo(svc, page.user, wo_id, stage, data),
        "Photo added.",
    )


@router.post("/work-orders/{wo_id}/{action}")
def work_order_action(
    request: Request,
    svc: Service,
    page: Session,
    wo_id: int,
    action: str,
    note: Annotated[str, Form(max_length=4000)] = "",
    department_id: Annotated[str | None, Form()] = None,
    csrf: Csrf = None,
) -> RedirectResponse:
    return act(
        request,
        page,
        csrf,
        f"/console/work-orders/{wo_id}",
        lambda: actions.work_order_act(svc, page.user, wo_id, action, note, department_id or None),
        "Work order updated.",
    )


# --- assets ------------------------------------------------------------------------------------------------


@router.get("/assets", response_class=HTMLResponse)
def asset_list(
    request: Request, svc: Service, page: Session, kind: str = "", department: str = "", cell: str = ""
) -> HTMLResponse:
    page.need("assets.view")
    c = assets.c
    q = select(assets).where(asset_filter(page.user)).order_by(c.id)
    for col, v in ((c.kind, kind), (c.department_id, department), (c.grid_cell_id, cell)):
        if v:
            q = q.where(col == v)
    with svc.engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(q.subquery())).scalar_one()
        rows = rows_of(conn.execute(q.limit(50)))
        points = [
            tuple(r)
            for r in conn.execute(
                select(c.lat, c.lon, c.department_id, c.grid_cell_id, c.id)
                .where(c.id.in_(select(q.subquery().c.id)), c.lat.is_not(None), c.lon.is_not(None))
                .limit(20_000)
            )
        ]
        kinds = [r[0] for r in conn.execute(select(c.kind).where(asset_filter(page.user)).distinct().order_by(c.kind))]
        depts = rows_of(conn.execute(select(departments.c.id, departments.c.name).order_by(departments.c.id)))
        cells = [r[0] for r in conn.execute(select(grid_cells.c.id).order_by(grid_cells.c.id))]
    return render(
        request,
        "assets.html",
        page.user,
        page.csrf,
        assets=rows,
        total=total,
        kinds=kinds,
        departments=depts,
        cells=cells,
        sel={"kind": kind, "department": department, "cell": cell},
        map=asset_map(points),
    )


# --- gates and residents -----------------------------------------------------------------------------------


@router.get("/gates", response_class=HTMLResponse)
def gates(request: Request, svc: Service, page: Session) -> HTMLResponse:
    page.need("gate.view")
    svc.gate.expire_requests()
    c = t.messages.c
    with svc.engine.connect() as conn:
        decisions = rows_of(
            conn.execute(
                select(c.device_id, c.received_ms, c.body)
                .where(c.type == "gate.decision")
                .order_by(c.received_ms.desc(), c.id.desc())
                .limit(100)
            )
        )
        visitors = rows_of(
            conn.execute(select(g.visitor_requests).order_by(g.visitor_requests.c.created_ms.desc()).limit(50))
        )
    temps = [d["body"].get("temperature_c") for d in decisions if d["body"].get("temperature_c") is not None]
    return render(
        request,
        "gates.html",
        page.user,
        page.csrf,
        decisions=decisions,
        visitors=visitors,
        temps=list(reversed(temps)),
    )


@router.get("/residents", response_class=HTMLResponse)
def residents(request: Request, svc: Service, page: Session, site: str = "") -> HTMLResponse:
    page.need("residents.manage")
    r, f = g.residents.c, g.resident_faces.c
    q = (
        select(r.id, r.site_id, r.unit, r.name, r.consent_ms, r.consent_by, func.count(f.id).label("faces"))
        .select_from(g.residents.outerjoin(g.resident_faces, f.resident_id == r.id))
        .group_by(r.id, r.site_id, r.unit, r.name, r.consent_ms, r.consent_by)
        .order_by(r.site_id, r.unit, r.id)
        .limit(500)
    )
    if site:
        q = q.where(r.site_id == site)
    with svc.engine.connect() as conn:
        rows = rows_of(conn.execute(q))
    return render(
        request, "residents.html", page.user, page.csrf, residents=rows, erasures=svc.gate.erasures(site or None)
    )


@router.post("/residents/{resident_id}/{action}")
def resident_action(
    request: Request, svc: Service, page: Session, resident_id: str, action: str, csrf: Csrf = None
) -> RedirectResponse:
    fns = {
        "delete": (lambda: actions.erase_resident(svc, page.user, resident_id, "deleted"), "Resident deleted."),
        "withdraw": (
            lambda: actions.erase_resident(svc, page.user, resident_id, "withdrawn"),
            "Consent withdrawn: faces are being erased.",
        ),
        "consent": (lambda: actions.record_consent(svc, page.user, resident_id), "Consent recorded."),
    }
    fn, ok = fns.get(action, (lambda: (_ for _ in ()).throw(actions.ActionError("unknown action")), ""))
    return act(request, page, csrf, "/console/residents", fn, ok)


# --- parking towers and elevators ----------------------------------------------------------------------------


def _latest(conn: Any, type_: str, key: str, devices: list[str], limit: int = 2000) -> dict[str, dict[str, Any]]:
    """The newest message of ``type_`` per device and ``key`` (lift, car)."""
    c = t.messages.c
    out: dict[str, dict[str, Any]] = {}
    rows = conn.execute(
        select(c.device_id, c.body, c.received_ms)
        .where(c.type == type_, c.device_id.in_(devices))
        .order_by(c.received_ms.desc(), c.id.desc())
        .limit(limit)
    )
    for r in rows:
        out.setdefault(f"{r.device_id}/{r.body.get(key)}", {**r.body, "device_id": r.device_id, "at": r.received_ms})
    return out


@router.get("/parking", response_class=HTMLResponse)
def parking(request: Request, svc: Service, page: Session) -> HTMLResponse:
    page.need("parking.view")
    c = t.messages.c
    towers = []
    with svc.engine.connect() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                select(c.device_id).where(c.type.in_(["lift.status", "lift.result"])).distinct().order_by(c.device_id)
            )
        ]
        status = _latest(conn, "lift.status", "lift", ids)
        for dev in ids:
            hist = rows_of(
                conn.execute(
                    select(c.type, c.body, c.received_ms)
                    .where(c.device_id == dev, c.type.in_(["lift.request", "lift.result"]))
                    .order_by(c.received_ms, c.id)
                    .limit(5000)
                )
            )
            results = [h["body"] for h in hist if h["type"] == "lift.result"]
            done = {b["request_id"]: b for b in results}
            recent = [
                {**h["body"], "at": h["received_ms"], "result": done.get(h["body"]["request_id"])}
                for h in hist
                if h["type"] == "lift.request"
            ]
            durations = sorted(b["duration_s"] for b in results if b.get("ok") and b["kind"] == "retrieve")
            towers.append(
                {
                    "id": dev,
                    "lifts": sorted((v for k, v in status.items() if k.startswith(dev + "/")), key=lambda x: x["lift"]),
                    "grid": bay_grid(results),
                    "recent": list(reversed(recent[-20:])),
                    "retrieve_p50": durations[len(durations) // 2] if durations else None,
                    "retrievals": len(durations),
                }
            )
    return render(request, "parking.html", page.user, page.csrf, towers=towers)


@router.get("/elevators", response_class=HTMLResponse)
def elevators(request: Request, svc: Service, page: Session) -> HTMLResponse:
    page.need("elevators.view")
    c = t.messages.c
    with svc.engine.connect() as conn:
        ids = [r[0] for r in conn.execute(select(c.device_id).where(c.type == "elevator.status").distinct())]
        cars = sorted(_latest(conn, "elevator.status", "car", ids).values(), key=lambda x: (x["device_id"], x["car"]))
        faults = rows_of(
            conn.execute(
                select(t.alarms)
                .where(t.alarms.c.key.like("elevator.%"))
                .order_by(t.alarms.c.raised_ms.desc())
                .limit(50)
            )
        )
    return render(request, "elevators.html", page.user, page.csrf, cars=cars, faults=faults)


# --- rules, users, audit -----------------------------------------------------------------------------------


@router.get("/rules", response_class=HTMLResponse)
def rules(request: Request, svc: Service, page: Session) -> HTMLResponse:
    page.need("rules.view")
    rs = [r.model_dump(mode="json") for r in svc.rules.engine.rules] if svc.rules else []
    active = svc.rules.active() if svc.rules else []
    return render(
        request,
        "rules.html",
        page.user,
        page.csrf,
        rules=rs,
        active=active,
        file=str(svc.settings.rules_file) if svc.settings.rules_file else None,
    )


@router.post("/rules/reload")
def rules_reload(request: Request, svc: Service, page: Session, csrf: Csrf = None) -> RedirectResponse:
    return act(request, page, csrf, "/console/rules", lambda: actions.reload_rules(svc, page.user), "Rules reloaded.")


@router.get("/users", response_class=HTMLResponse)
def users(request: Request, svc: Service, page: Session) -> HTMLResponse:
    page.need("users.manage")
    u = a.users.c
    with svc.engine.connect() as conn:
        rows = rows_of(
            conn.execute(
                select(u.id, u.username, u.role, u.department_id, u.resident_id, u.language, u.disabled).order_by(
                    u.username
                )
            )
        )
        audit = rows_of(conn.execute(select(a.audit_log).order_by(a.audit_log.c.id.desc()).limit(100)))
    return render(
        request,
        "users.html",
        page.user,
        page.csrf,
        users=rows,
        audit=audit,
        default_language=svc.settings.default_language,
    )


@router.post("/users")
def create_user(
    request: Request,
    svc: Service,
    page: Session,
    username: Annotated[str, Form(min_length=2, max_length=64)],
    password: Annotated[str, Form(max_length=200)],
    role: Annotated[str, Form()],
    department_id: Annotated[str, Form()] = "",
    resident_id: Annotated[str, Form()] = "",
    language: Annotated[str, Form()] = "en",
    csrf: Csrf = None,
) -> RedirectResponse:
    def create() -> None:
        actions.need(page.user, "users.manage")
        try:
            svc.auth.create_user(
                username, password, role, department_id or None, resident_id or None, language, by=page.user.username
            )
        except ValueError as exc:
            raise actions.ActionError(str(exc)) from None

    return act(request, page, csrf, "/console/users", create, "User created.")
