"""The console's elevator page: every car's state and faults."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from cloud.alarms import queries as alarm_queries
from cloud.api.deps import Service
from cloud.console.app import Session
from cloud.console.render import render, rows_of
from cloud.devices import queries as device_queries

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/elevators", response_class=HTMLResponse)
def elevators(request: Request, svc: Service, page: Session) -> HTMLResponse:
    page.need("elevators.view")
    with svc.engine.connect() as conn:
        ids = device_queries.reporting(conn, "elevator.status")
        cars = sorted(
            device_queries.latest_messages(conn, "elevator.status", "car", ids).values(),
            key=lambda x: (x["device_id"], x["car"]),
        )
        faults = rows_of(conn.execute(alarm_queries.with_key_prefix(page.user, "elevator.")))
    return render(request, "elevators.html", page.user, page.csrf, cars=cars, faults=faults)
