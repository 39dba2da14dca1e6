"""The console's parking-tower page: bays, queue, retrievals."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from cloud.api.deps import Service
from cloud.console.app import Session
from cloud.console.render import render
from cloud.console.shapes import bay_grid
from cloud.devices import queries as device_queries

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/parking", response_class=HTMLResponse)
def parking(request: Request, svc: Service, page: Session) -> HTMLResponse:
    page.need("parking.view")
    towers = []
    with svc.engine.connect() as conn:
        ids = device_queries.reporting(conn, "lift.status", "lift.result")
        status = device_queries.latest_messages(conn, "lift.status", "lift", ids)
        for dev in ids:
            hist = device_queries.history(conn, dev, ("lift.request", "lift.result"))
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
