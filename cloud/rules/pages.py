"""The console's rules page: the rule set, what is active, reload."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from cloud.api.deps import Service
from cloud.console.app import Csrf, Session, act
from cloud.console.render import render
from cloud.rules import actions as rules_actions

router = APIRouter(prefix="/console", include_in_schema=False)


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
    return act(
        request, page, csrf, "/console/rules", lambda: rules_actions.reload_rules(svc, page.user), "Rules reloaded."
    )
