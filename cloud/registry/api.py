"""Departments, grid cells and assets; CSV import/export."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from cloud.api.deps import Conn, CurrentUser, Page, Paging, RecordKey, Service, allow, insert_new, paged, require_token
from cloud.api.models import Asset, Department, GridCell, ImportReport
from cloud.auth.scope import asset_filter
from cloud.ingest.store import now_ms
from cloud.registry import queries
from cloud.registry.catalog import ASSET_KINDS, COVER_SUBTYPES
from cloud.registry.csvio import export_assets, import_assets
from cloud.registry.tables import departments, grid_cells

router = APIRouter(prefix="/api", dependencies=[Depends(require_token)], tags=["registry"])
Key = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
MAX_CSV_BYTES = 32 * 1024 * 1024


class DepartmentIn(BaseModel):
    id: Key
    name: str = Field(min_length=1, max_length=200)
    contact: str = Field(default="", max_length=200)
    sla_hours: dict[Literal["urgent", "high", "normal", "low"], Annotated[float, Field(gt=0, le=24 * 366)]] | None = (
        Field(default=None, description="hours to resolve per priority, overriding the defaults (4/24/72/168)")
    )


class GridCellIn(BaseModel):
    id: Key
    name: str = Field(default="", max_length=200)
    worker_name: str = Field(default="", max_length=200)
    worker_contact: str = Field(default="", max_length=200)


Subtype = Annotated[str, Field(min_length=1, max_length=48, pattern=r"^[a-z0-9][a-z0-9_]*$")]


class Catalog(BaseModel):
    kinds: list[str]
    cover_subtypes: list[str]
    confidential_subtypes: list[str] = Field(description="seen only by the owning department and admins")


class ConfidentialIn(BaseModel):
    subtypes: list[Subtype] = Field(
        max_length=200, description="the whole list: subtypes left out are no longer confidential"
    )


@router.get("/registry/catalog", response_model=Catalog, dependencies=[allow("assets.view")])
def catalog(conn: Conn) -> Catalog:
    return Catalog(
        kinds=list(ASSET_KINDS), cover_subtypes=list(COVER_SUBTYPES), confidential_subtypes=queries.confidential(conn)
    )


@router.put("/registry/confidential-subtypes", response_model=Catalog, dependencies=[allow("registry.confidential")])
def set_confidential(body: ConfidentialIn, svc: Service, user: CurrentUser) -> Catalog:
    """Mark which asset subtypes only their owning department and admins may see (audited)."""
    wanted = sorted(set(body.subtypes))
    with svc.engine.connect() as conn:
        in_use = queries.subtypes_in_use(conn)
    unknown = [x for x in wanted if x not in COVER_SUBTYPES and x not in in_use]
    if unknown:  # a typo would otherwise replace the list and quietly un-mark the rest
        raise HTTPException(
            422,
            detail=f"unknown subtype(s) {', '.join(unknown)}: not in the catalog and no asset has them "
            "(GET /api/registry/catalog); the list sent replaces the whole list",
        )
    before = queries.mark_confidential(svc.engine, wanted, user.username, now_ms())
    svc.auth.audit(user.username, "registry.confidential", "", {"before": before, "after": wanted})
    with svc.engine.connect() as conn:
        return catalog(conn)


@router.get("/departments", response_model=Page, dependencies=[allow("assets.view")])
def list_departments(conn: Conn, p: Paging) -> Page:
    return paged(conn, queries.all_departments(), p)


@router.post("/departments", status_code=201, response_model=Department, dependencies=[allow("devices.command")])
def create_department(body: DepartmentIn, svc: Service) -> dict[str, Any]:
    insert_new(svc, departments, body.model_dump(), "department")
    return body.model_dump()


@router.get("/grid-cells", response_model=Page, dependencies=[allow("assets.view")])
def list_grid_cells(conn: Conn, p: Paging) -> Page:
    return paged(conn, queries.all_grid_cells(), p)


@router.post("/grid-cells", status_code=201, response_model=GridCell, dependencies=[allow("devices.command")])
def create_grid_cell(body: GridCellIn, svc: Service) -> dict[str, Any]:
    insert_new(svc, grid_cells, body.model_dump(), "grid cell")
    return body.model_dump()


@router.get("/assets", response_model=Page, dependencies=[allow("assets.view")])
def list_assets(
    conn: Conn,
    p: Paging,
    user: CurrentUser,
    kind: str | None = None,
    subtype: str | None = None,
    department: str | None = None,
    grid_cell: str | None = None,
    device: str | None = None,
) -> Page:
    q = queries.assets_of(
        user, kind=kind, subtype=subtype, department_id=department, grid_cell_id=grid_cell, device_id=device
    )
    return paged(conn, q, p)


@router.get("/assets/{asset_id}", response_model=Asset, dependencies=[allow("assets.view")])
def get_asset(asset_id: RecordKey, conn: Conn, user: CurrentUser) -> dict[str, Any]:
    a = queries.asset(conn, user, asset_id)
    if a is None:
        raise HTTPException(404, detail=f"no asset {asset_id!r}")
    return a


@router.post("/assets/import", response_model=ImportReport, dependencies=[allow("devices.command")])
async def import_csv(
    request: Request,
    svc: Service,
    user: CurrentUser,
    strict: Annotated[bool, Query(description="reject the whole file if any row is bad")] = False,
) -> dict[str, Any]:
    """Upload the CSV as the request body (``Content-Type: text/csv``)."""
    raw = await request.body()
    if len(raw) > MAX_CSV_BYTES:
        raise HTTPException(413, detail=f"CSV larger than {MAX_CSV_BYTES} bytes; split the file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise HTTPException(422, detail="the CSV must be UTF-8") from None
    # in a worker thread: a district's registry takes seconds, and the rest of the API keeps answering meanwhile
    report = await run_in_threadpool(import_assets, svc.engine, text, strict=strict, restricted=user.role != "admin")
    svc.auth.audit(
        user.username,
        "registry.import",
        "",
        {"rows": report.rows, "imported": report.imported, "refused": len(report.errors), "strict": strict},
    )
    if report.rejected:
        raise HTTPException(422, detail={"message": "nothing imported", **report.as_dict()})
    return report.as_dict()


@router.get("/assets.csv", response_class=StreamingResponse, dependencies=[allow("assets.view")])
def export_csv(svc: Service, user: CurrentUser) -> StreamingResponse:
    return StreamingResponse(
        export_assets(svc.engine, asset_filter(user)),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="assets.csv"'},
    )
