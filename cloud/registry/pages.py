"""The console's asset registry: every asset with its owner and cell, on the map."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from cloud.api.deps import Service
from cloud.console.app import Session
from cloud.console.render import render, rows_of
from cloud.console.shapes import asset_map
from cloud.registry import queries

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/assets", response_class=HTMLResponse)
def asset_list(
    request: Request, svc: Service, page: Session, kind: str = "", department: str = "", cell: str = ""
) -> HTMLResponse:
    page.need("assets.view")
    q = queries.assets_of(page.user, kind=kind, department_id=department, grid_cell_id=cell)
    with svc.engine.connect() as conn:
        total = queries.count(conn, q)
        rows = rows_of(conn.execute(q.limit(50)))
        points = queries.positions(conn, q)
        kinds = queries.kinds_of(conn, page.user)
        depts = queries.department_names(conn)
        cells = queries.grid_cell_ids(conn)
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
