"""What residents and staff do at the gate's back office: visitors, consent, erasure."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from cloud.actions import Conflict, Forbidden, NotFound, Unavailable, need, translated
from cloud.auth.service import User
from cloud.gate import tables as g
from cloud.gate.service import GateError

if TYPE_CHECKING:
    from cloud.service import CloudService


def resident_of(svc: CloudService, user: User) -> dict[str, Any]:
    """A resident account's own record (site, flat)."""
    if user.role != "resident" or not user.resident_id:
        raise Forbidden("this is for resident accounts linked to a resident record")
    with svc.engine.connect() as conn:
        row = conn.execute(select(g.residents).where(g.residents.c.id == user.resident_id)).first()
    if row is None:
        raise NotFound(f"no resident {user.resident_id} (ask the property office)")
    return dict(row._mapping)


def answer_visitor(svc: CloudService, user: User, request_id: str, approved: bool) -> dict[str, Any]:
    need(user, "visitors.answer")
    if user.role == "resident":
        me = resident_of(svc, user)
        with svc.engine.connect() as conn:
            req = conn.execute(
                select(g.visitor_requests.c.unit, g.visitor_requests.c.site_id).where(
                    g.visitor_requests.c.request_id == request_id
                )
            ).first()
        if req is None or (req.unit, req.site_id) != (me["unit"], me["site_id"]):
            raise NotFound(f"no visitor request {request_id} for your flat")
    try:
        out: dict[str, Any] = svc.gate.answer(request_id, approved, user.username)
    except LookupError as exc:
        raise NotFound(f"no {str(exc).strip(chr(39))}") from None
    except GateError as exc:
        raise Conflict(str(exc)) from None
    except ConnectionError as exc:
        raise Unavailable(f"{exc}; try again when the broker is back") from None
    svc.auth.audit(user.username, "visitor.approve" if approved else "visitor.deny", request_id)
    return out


def erase_resident(svc: CloudService, user: User, resident_id: str, reason: str) -> dict[str, Any]:
    """``deleted`` (the resident leaves) or ``withdrawn`` (consent to face recognition withdrawn): either way
    their faces leave every gate."""
    need(user, "residents.manage")
    fn = svc.gate.remove_resident if reason == "deleted" else svc.gate.withdraw_consent
    with translated():
        out = fn(resident_id, user.username)
    svc.auth.audit(user.username, f"resident.{reason}", resident_id, {"revision": out["revision"]})
    return out


def record_consent(svc: CloudService, user: User, resident_id: str) -> dict[str, Any]:
    need(user, "residents.manage")
    with translated():
        out = svc.gate.record_consent(resident_id, user.username)
    svc.auth.audit(user.username, "resident.consent", resident_id)
    return out
