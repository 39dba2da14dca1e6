"""The rules' REST API: the loaded rule set, what is active, reload."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import Field

from cloud.api.deps import (
    CurrentUser,
    Service,
    allow,
    require_token,
    run,
)
from cloud.api.models import (
    Rules,
    RulesLoaded,
)
from cloud.rules import actions as rules_actions

router = APIRouter(prefix="/api", dependencies=[Depends(require_token)])
IdStr = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
# --- rules -----------------------------------------------------------------------------------------


@router.get("/rules", response_model=Rules, tags=["rules"], dependencies=[allow("rules.view")])
def list_rules(svc: Service) -> dict[str, Any]:
    if svc.rules is None:
        return {"file": None, "rules": [], "active": []}
    return {
        "file": str(svc.settings.rules_file),
        "rules": [r.model_dump(mode="json") for r in svc.rules.engine.rules],
        "active": [{"rule": r, "device": d} for r, d in svc.rules.active()],
    }


@router.post("/rules/reload", response_model=RulesLoaded, tags=["rules"], dependencies=[allow("rules.reload")])
def reload_rules(svc: Service, user: CurrentUser) -> dict[str, Any]:
    """Re-read the rules file; a bad file is refused with the reasons and the running rules stay."""
    return run(rules_actions.reload_rules, svc, user)  # type: ignore[no-any-return]
