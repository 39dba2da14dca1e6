"""Community gates: residents and their faces, vehicle plates, visitor requests for the resident app, media,
and the gate decision log."""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from cloud.api.deps import (
    Conn,
    CurrentUser,
    DeviceId,
    Page,
    Paging,
    PlatePath,
    RecordKey,
    Service,
    SiteId,
    acting,
    allow,
    page,
    paged,
    require_token,
    run,
)
from cloud.api.models import (
    ConsentRecorded,
    ConsentWithdrawn,
    Erasure,
    FacesAdded,
    PlateAdded,
    PlateRemoved,
    ResidentCreated,
    ResidentDeleted,
    VisitorAnswered,
)
from cloud.gate import actions as gate_actions
from cloud.gate import queries
from cloud.gate.service import GateError

if TYPE_CHECKING:
    from edge.vision.detect import FaceDetector
    from edge.vision.embed import Embedder
from protocol.plates import PlateError

router = APIRouter(prefix="/api", dependencies=[Depends(require_token)], tags=["gates"])
MAX_PHOTO = 10 * 2**20


def _call(fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except LookupError as exc:
        raise HTTPException(404, detail=f"no {str(exc).strip(chr(39))}") from None
    except (GateError, PlateError) as exc:
        raise HTTPException(422, detail=str(exc)) from None
    except ConnectionError as exc:
        raise HTTPException(503, detail=f"{exc}; try again when the broker is back") from None


class ResidentIn(BaseModel):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    unit: str | None = Field(default=None, max_length=16)
    name: str = Field(default="", max_length=200)
    consent: bool = Field(default=False, description="the resident consents to face recognition (recorded now)")


@router.post(
    "/sites/{site_id}/residents",
    status_code=201,
    response_model=ResidentCreated,
    dependencies=[allow("residents.manage")],
)
def add_resident(site_id: SiteId, body: ResidentIn, svc: Service, user: CurrentUser) -> dict[str, Any]:
    out = _call(svc.gate.add_resident, site_id, body.id, body.unit, body.name, body.consent, user.username)
    svc.auth.audit(user.username, "resident.create", body.id, {"consent": body.consent})
    return out  # type: ignore[no-any-return]


@router.get("/sites/{site_id}/residents", response_model=Page, dependencies=[allow("residents.manage")])
def list_residents(site_id: SiteId, conn: Conn, p: Paging, unit: str | None = None) -> Page:
    return paged(conn, queries.residents(site_id, unit), p)


@router.delete("/residents/{resident_id}", response_model=ResidentDeleted, dependencies=[allow("residents.manage")])
def remove_resident(resident_id: RecordKey, svc: Service, user: CurrentUser) -> dict[str, Any]:
    """Delete the resident; their faces are erased from every gate (follow it at GET /api/erasures)."""
    return run(gate_actions.erase_resident, svc, user, resident_id, "deleted")  # type: ignore[no-any-return]


@router.post(
    "/residents/{resident_id}/consent", response_model=ConsentRecorded, dependencies=[allow("residents.manage")]
)
def record_consent(resident_id: RecordKey, svc: Service, user: CurrentUser) -> dict[str, Any]:
    """Record the resident's consent to face recognition (needed before any face is enrolled)."""
    return run(gate_actions.record_consent, svc, user, resident_id)  # type: ignore[no-any-return]


@router.post(
    "/residents/{resident_id}/consent/withdraw",
    response_model=ConsentWithdrawn,
    dependencies=[allow("residents.manage")],
)
def withdraw_consent(resident_id: RecordKey, svc: Service, user: CurrentUser) -> dict[str, Any]:
    """Consent withdrawn: the resident stays (plates, visitors) but their faces are erased from every gate."""
    return run(gate_actions.erase_resident, svc, user, resident_id, "withdrawn")  # type: ignore[no-any-return]


@router.get(
    "/erasures",
    response_model=list[Erasure],  # type: ignore[valid-type]
    dependencies=[allow("residents.manage")],
)
def erasures(svc: Service, site: str | None = None) -> list[dict[str, Any]]:
    """Face-data erasures, newest first, each with the gates that have not yet confirmed it."""
    return svc.gate.erasures(site)


@functools.cache
def _face_models() -> tuple[FaceDetector, Embedder]:
    """Loaded once per process, on the first enrolment photo (the models are thread-safe)."""
    from edge.vision.detect import FaceDetector
    from edge.vision.embed import Embedder

    return FaceDetector(), Embedder(1)


def _embed_photo(data: bytes) -> np.ndarray:
    """The same models as the gates (edge.vision), so cloud-made embeddings match gate-made ones."""
    from cloud.images import ImageRefused, open_image

    try:
        rgb = np.asarray(open_image(data, ("JPEG", "PNG")).convert("RGB"))
    except ImageRefused as exc:
        raise GateError(str(exc)) from None
    det, emb = _face_models()
    faces = det.detect(rgb)
    if not faces:
        raise GateError("no face found in the photo: a frontal, well-lit face is needed")
    return emb.embed(rgb, det.refine(rgb, faces[0]))


@router.post(
    "/residents/{resident_id}/faces",
    status_code=201,
    response_model=FacesAdded,
    dependencies=[allow("residents.manage")],
)
async def add_face_photo(resident_id: RecordKey, request: Request, svc: Service) -> dict[str, Any]:
    """The photo is the request body (JPEG/PNG ≤ 10 MB); only its embedding is kept, never the image."""
    data = await request.body()
    if not data or len(data) > MAX_PHOTO:
        raise HTTPException(422, detail="send one photo (JPEG or PNG, at most 10 MB) as the request body")
    emb = await asyncio.to_thread(_call, _embed_photo, data)
    return _call(svc.gate.add_faces, resident_id, [emb])  # type: ignore[no-any-return]


class EmbeddingsIn(BaseModel):
    embeddings_b64: list[str] = Field(min_length=1, max_length=10)


@router.post(
    "/residents/{resident_id}/embeddings",
    status_code=201,
    response_model=FacesAdded,
    dependencies=[allow("residents.manage")],
)
def add_embeddings(resident_id: RecordKey, body: EmbeddingsIn, svc: Service) -> dict[str, Any]:
    """Embeddings made elsewhere with the same model (128 little-endian float32, base64)."""
    try:
        vecs = [np.frombuffer(base64.b64decode(e, validate=True), dtype="<f4") for e in body.embeddings_b64]
    except (binascii.Error, ValueError):
        raise HTTPException(422, detail="embeddings_b64 must be base64 of 128 little-endian float32") from None
    return _call(svc.gate.add_faces, resident_id, vecs)  # type: ignore[no-any-return]


class PlateIn(BaseModel):
    plate: str = Field(min_length=2, max_length=32)
    holder: str = Field(min_length=1, max_length=64)
    kind: Literal["resident", "visitor", "staff", "service"] = "resident"
    valid_from_ms: int | None = Field(default=None, ge=0)
    valid_until_ms: int | None = Field(default=None, ge=0)


@router.post(
    "/sites/{site_id}/plates", status_code=201, response_model=PlateAdded, dependencies=[allow("residents.manage")]
)
def add_plate(site_id: SiteId, body: PlateIn, svc: Service) -> dict[str, Any]:
    return _call(  # type: ignore[no-any-return]
        svc.gate.add_plate, site_id, body.plate, body.holder, body.kind, body.valid_from_ms, body.valid_until_ms
    )


@router.get("/sites/{site_id}/plates", response_model=Page, dependencies=[allow("residents.manage")])
def list_plates(site_id: SiteId, conn: Conn, p: Paging, holder: str | None = None) -> Page:
    return paged(conn, queries.plates(site_id, holder), p)


@router.delete("/sites/{site_id}/plates/{plate}", response_model=PlateRemoved, dependencies=[allow("residents.manage")])
def remove_plate(site_id: SiteId, plate: PlatePath, svc: Service) -> dict[str, Any]:
    return _call(svc.gate.remove_plate, site_id, plate)  # type: ignore[no-any-return]


@router.get("/visitor-requests", response_model=Page, dependencies=[allow("visitors.answer")])
def list_visitor_requests(
    conn: Conn,
    svc: Service,
    p: Paging,
    user: CurrentUser,
    site: str | None = None,
    unit: str | None = None,
    status: Literal["pending", "approved", "denied", "expired"] | None = None,
) -> Page:
    """For the resident app: a flat's pending requests (``?unit=1203&status=pending``), newest first. A resident
    account sees only its own flat's."""
    svc.gate.expire_requests()
    if user.role == "resident":
        me = run(gate_actions.resident_of, svc, user)
        return paged(conn, queries.flat_visitor_requests(me["site_id"], me["unit"], status), p)
    return paged(conn, queries.visitor_requests(site, unit, status), p)


class AnswerIn(BaseModel):
    approved: bool
    by: str | None = Field(default=None, min_length=1, max_length=64, description="machines: for whom")


@router.post(
    "/visitor-requests/{request_id}/answer", response_model=VisitorAnswered, dependencies=[allow("visitors.answer")]
)
def answer_visitor(request_id: RecordKey, body: AnswerIn, svc: Service, user: CurrentUser) -> dict[str, Any]:
    """The resident's answer goes to the gate as a signed command that expires with the request."""
    return run(gate_actions.answer_visitor, svc, acting(user, body.by), request_id, body.approved)  # type: ignore[no-any-return]


@router.get(
    "/media/{device_id}/{ref}",
    response_class=Response,
    responses={
        200: {
            "description": "the picture, as the device sent it",
            "content": {m: {"schema": {"type": "string", "format": "binary"}} for m in ("image/jpeg", "image/png")},
        }
    },
    dependencies=[allow("visitors.answer")],
)
def get_media(device_id: DeviceId, ref: RecordKey, conn: Conn, svc: Service, user: CurrentUser) -> Response:
    """A picture a device sent (``ref`` as the device named it). Residents see only the snapshot of a visitor to
    their own flat, taken by the gate that raised the request."""
    unit_of = None
    if user.role == "resident":
        me = run(gate_actions.resident_of, svc, user)
        unit_of = (me["site_id"], me["unit"])
    row = queries.media(conn, device_id, ref, unit_of)
    if row is None:
        raise HTTPException(404, detail=f"no media {ref} from {device_id}")
    return Response(
        row.data,
        media_type=row.content_type,
        headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/gate/decisions", response_model=Page, dependencies=[allow("gate.view")])
def gate_decisions(
    conn: Conn,
    p: Paging,
    site: str | None = None,
    device: str | None = None,
    decision: Literal["open", "deny", "visitor", "hold"] | None = None,
    reason: str | None = None,
    since_ms: Annotated[int | None, Query(ge=0)] = None,
) -> Page:
    """Gate and barrier decisions, newest first (no face images: decisions carry ids and scores only)."""
    q = queries.decisions(site, device, since_ms)
    if decision is None and reason is None:
        return paged(conn, q, p)
    rows = [dict(r._mapping) for r in conn.execute(q.limit(10_000))]
    rows = [
        r
        for r in rows
        if (decision is None or r["body"].get("decision") == decision)
        and (reason is None or r["body"].get("reason") == reason)
    ]
    return page(rows[p.offset : p.offset + p.limit], len(rows), p)
