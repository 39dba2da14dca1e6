"""The console's device pages: the list, one device (health, readings, commands)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from cloud.alarms import queries as alarm_queries
from cloud.api.deps import Service
from cloud.console.app import Csrf, Session, act
from cloud.console.render import render, rows_of
from cloud.devices import actions as devices_actions
from cloud.devices import queries
from cloud.ingest.store import now_ms

router = APIRouter(prefix="/console", include_in_schema=False)
COMMANDS = ("ping", "outbox-stats", "reboot-agent")


def _outbox_depth(health: dict[str, Any] | None) -> int | None:
    depth = (health or {}).get("outbox_depth")
    return sum(depth.values()) if isinstance(depth, dict) else None


@router.get("/devices", response_class=HTMLResponse)
def devices(
    request: Request, svc: Service, page: Session, site: str = "", kind: str = "", status: str = ""
) -> HTMLResponse:
    page.need("devices.view")
    with svc.engine.connect() as conn:
        rows = rows_of(conn.execute(queries.devices(page.user, site, kind, status).limit(500)))
        sites = queries.site_ids(conn)
        kinds = queries.kinds(conn)
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
        dev = queries.device(conn, page.user, device_id)
        if dev is None:
            return render(request, "notfound.html", page.user, page.csrf, status=404, what=device_id)
        metrics = queries.recent_metrics(conn, device_id, now_ms() - 86_400_000)
        cmds = rows_of(conn.execute(queries.commands(page.user, device_id).limit(10)))
        alarms = rows_of(conn.execute(alarm_queries.alarms(page.user, device=device_id).limit(10)))
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
        lambda: devices_actions.send_command(svc, page.user, device_id, name, {}),
        "Command sent.",
    )
