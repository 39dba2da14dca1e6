"""The fleet page: claim tokens for technicians, device identities (rotate, revoke), update bundles and
rollouts with their progress."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cloud import actions
from cloud.api.deps import Service
from cloud.console.app import Session, act, check_csrf
from cloud.console.render import render
from cloud.devices import queries as device_queries
from cloud.provisioning import actions as provisioning_actions
from cloud.provisioning import queries
from cloud.updates import actions as updates_actions
from cloud.updates import queries as update_queries

router = APIRouter(prefix="/console", include_in_schema=False)
Csrf = Annotated[str | None, Form()]


@router.get("/fleet", response_class=HTMLResponse)
def fleet(request: Request, svc: Service, page: Session) -> HTMLResponse:
    return _fleet(request, svc, page)


def _fleet(request: Request, svc: Service, page: Session, claim: str = "") -> HTMLResponse:
    """The page; ``claim``: a claim token just made, shown on this answer only (never in a URL, which browsers
    keep in their history and proxies in their logs)."""
    page.need("updates.manage")
    with svc.engine.connect() as conn:
        bundles = update_queries.bundles(conn)
        rollouts = update_queries.rollouts(conn, 20)
        sites = device_queries.site_ids(conn)
        claims = queries.claims(conn)
        creds = queries.credentials(conn)
    for r in rollouts:
        r["counts"] = svc.updates.get(r["id"])["counts"]
    return render(
        request,
        "fleet.html",
        page.user,
        page.csrf,
        bundles=bundles,
        rollouts=rollouts,
        sites=sites,
        claims=claims,
        creds=creds,
        new_claim=claim,
    )


@router.get("/fleet/rollouts/{rollout_id}", response_class=HTMLResponse)
def rollout(request: Request, svc: Service, page: Session, rollout_id: str) -> HTMLResponse:
    page.need("updates.manage")
    try:
        ro = svc.updates.get(rollout_id)
    except LookupError:
        return render(request, "notfound.html", page.user, page.csrf, status=404, what=rollout_id)
    return render(request, "rollout.html", page.user, page.csrf, ro=ro)


@router.post("/fleet/claims")
def fleet_claim(
    request: Request,
    svc: Service,
    page: Session,
    site: Annotated[str, Form()],
    kind: Annotated[str, Form()] = "",
    ttl_min: Annotated[float, Form(ge=1, le=10080)] = 60,
    csrf: Csrf = None,
) -> Response:
    from cloud.console.app import back

    check_csrf(request, page, csrf)
    try:
        out = provisioning_actions.new_claim(svc, page.user, site, ttl_min * 60, kind or None, "")
    except actions.ActionError as exc:
        return back("/console/fleet", err=str(exc))
    shown = _fleet(request, svc, page, claim=out["token"])  # shown once, in this answer
    shown.headers["Cache-Control"] = "no-store"
    return shown


@router.post("/fleet/rollouts")
def fleet_rollout(
    request: Request,
    svc: Service,
    page: Session,
    bundle_id: Annotated[str, Form()],
    site: Annotated[str, Form()] = "",
    rate_per_min: Annotated[float, Form(gt=0)] = 10,
    max_failure_pct: Annotated[float, Form(ge=0, le=100)] = 20,
    csrf: Csrf = None,
) -> RedirectResponse:
    kind = bundle_id.split("-", 1)[0]
    return act(
        request,
        page,
        csrf,
        "/console/fleet",
        lambda: updates_actions.create_rollout(
            svc,
            page.user,
            bundle_id,
            site=site or None,
            kind=kind,
            rate_per_min=rate_per_min,
            max_failure_ratio=max_failure_pct / 100,
        ),
        "Rollout started.",
    )


@router.post("/fleet/rollouts/{rollout_id}/abort")
def fleet_abort(request: Request, svc: Service, page: Session, rollout_id: str, csrf: Csrf = None) -> RedirectResponse:
    return act(
        request,
        page,
        csrf,
        f"/console/fleet/rollouts/{rollout_id}",
        lambda: updates_actions.abort_rollout(svc, page.user, rollout_id),
        "Rollout stopped.",
    )


@router.post("/fleet/devices/{device_id}/{action}")
def fleet_device(
    request: Request, svc: Service, page: Session, device_id: str, action: str, csrf: Csrf = None
) -> RedirectResponse:
    fns = {
        "revoke": (lambda: provisioning_actions.revoke_device(svc, page.user, device_id), "Device revoked."),
        "rotate": (lambda: provisioning_actions.rotate_credentials(svc, page.user, device_id), "New credentials sent."),
    }
    fn, ok = fns.get(action, (lambda: (_ for _ in ()).throw(actions.ActionError("unknown action")), ""))
    return act(request, page, csrf, "/console/fleet", fn, ok)
