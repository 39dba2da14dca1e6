"""Reloading the rule set."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cloud.actions import ActionError, Conflict, need
from cloud.auth.service import User

if TYPE_CHECKING:
    from cloud.service import CloudService


def reload_rules(svc: CloudService, user: User) -> dict[str, Any]:
    from cloud.rules.model import RulesError, load_rules_file

    need(user, "rules.reload")
    if svc.rules is None or svc.settings.rules_file is None:
        raise Conflict("no rules file configured (CE_RULES_FILE)")
    try:
        rules = load_rules_file(svc.settings.rules_file)
    except RulesError as exc:
        raise ActionError(str(exc)) from None
    svc.rules.reload(rules)
    if svc.live_bridge is not None:  # every other process reads its rules file again
        svc.live_bridge.rules_changed()
    svc.auth.audit(user.username, "rules.reload", str(svc.settings.rules_file), {"rules": len(rules.rules)})
    return {"loaded": len(rules.rules)}
