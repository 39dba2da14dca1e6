"""Update bundles (upload, list), the devices' download links, and rollouts (create, follow, abort)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from cloud.api.deps import BundleId, Conn, CurrentUser, RecordKey, Service, allow, run
from cloud.api.models import Bundle, Rollout, RolloutSummary
from cloud.updates import actions as updates_actions
from cloud.updates import queries

router = APIRouter(tags=["updates"])


@router.post("/api/updates", status_code=201, response_model=Bundle, dependencies=[allow("updates.manage")])
async def upload_bundle(request: Request, svc: Service, user: CurrentUser) -> dict[str, Any]:
    """The bundle (``civicedge cloud bundle``) is the request body; it is checked as a device would check it."""
    data = await request.body()
    return run(updates_actions.add_bundle, svc, user, data)  # type: ignore[no-any-return]


@router.get(
    "/api/updates",
    response_model=list[Bundle],  # type: ignore[valid-type]
    dependencies=[allow("updates.manage")],
)
def list_bundles(conn: Conn) -> list[dict[str, Any]]:
    return queries.bundles(conn)


@router.get("/updates/{bundle_id}/download", response_class=FileResponse)
def download(
    bundle_id: BundleId,
    svc: Service,
    device: Annotated[str, Query(max_length=64)],
    exp: Annotated[int, Query()],
    sig: Annotated[str, Query(max_length=64)],
) -> FileResponse:
    """For devices, with the expiring link their ``update`` command carries (no account needed)."""
    try:
        path = svc.updates.bundle_path(bundle_id, device, exp, sig)
    except PermissionError as exc:
        raise HTTPException(403, detail=str(exc)) from None
    except LookupError:
        raise HTTPException(404, detail=f"no bundle {bundle_id}") from None
    return FileResponse(path, media_type="application/gzip", filename=path.name)


class RolloutIn(BaseModel):
    bundle_id: str = Field(max_length=64)
    site: str | None = Field(default=None, max_length=64)
    kind: str | None = Field(default=None, max_length=32)
    devices: list[str] | None = Field(default=None, max_length=100_000)
    rate_per_min: float = Field(default=10, gt=0, le=10_000, description="devices started per minute at most")
    max_failure_ratio: float = Field(default=0.2, ge=0, le=1, description="abort past this share of failures")
    min_executed: int = Field(default=2, ge=1, description="devices finished before that share is judged")
    timeout_s: float = Field(default=120, ge=5, le=86_400, description="a new version must be healthy within this")


@router.post("/api/rollouts", status_code=201, response_model=Rollout, dependencies=[allow("updates.manage")])
def create_rollout(body: RolloutIn, svc: Service, user: CurrentUser) -> dict[str, Any]:
    return run(updates_actions.create_rollout, svc, user, **body.model_dump())  # type: ignore[no-any-return]


@router.get(
    "/api/rollouts",
    response_model=list[RolloutSummary],  # type: ignore[valid-type]
    dependencies=[allow("updates.manage")],
)
def list_rollouts(conn: Conn) -> list[dict[str, Any]]:
    return queries.rollouts(conn)


@router.get("/api/rollouts/{rollout_id}", response_model=Rollout, dependencies=[allow("updates.manage")])
def get_rollout(rollout_id: RecordKey, svc: Service) -> dict[str, Any]:
    """The rollout with each device's state."""
    try:
        return svc.updates.get(rollout_id)
    except LookupError:
        raise HTTPException(404, detail=f"no rollout {rollout_id}") from None


@router.post("/api/rollouts/{rollout_id}/abort", response_model=Rollout, dependencies=[allow("updates.manage")])
def abort_rollout(rollout_id: RecordKey, svc: Service, user: CurrentUser) -> dict[str, Any]:
    return run(updates_actions.abort_rollout, svc, user, rollout_id)  # type: ignore[no-any-return]
