"""The rule language (pydantic, ``extra="forbid"``). See docs/rules.md for an example of each kind."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_M):
    """Which devices a rule applies to (all when empty)."""

    sites: list[str] = Field(default_factory=list)
    subtypes: list[str] = Field(default_factory=list, description="subtype of the device's asset (registry)")
    kinds: list[str] = Field(default_factory=list, description="device kinds: gate, manhole, elevator, …")
    devices: list[str] = Field(default_factory=list)


class Threshold(_M):
    """``metric`` above (or below) a limit for at least ``for_s``; clears past ``clear_at`` (hysteresis)."""

    type: Literal["threshold"]
    metric: str
    above: float | None = None
    below: float | None = None
    clear_at: float | None = Field(default=None, description="default: the limit itself (no hysteresis)")
    for_s: float = Field(default=0, ge=0, description="minimum duration before it fires")

    @model_validator(mode="after")
    def _one_side(self) -> Threshold:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above / below")
        limit = self.above if self.above is not None else self.below
        if self.clear_at is not None and limit is not None:
            if self.above is not None and self.clear_at > limit:
                raise ValueError("clear_at must be at or below 'above' (hysteresis)")
            if self.below is not None and self.clear_at < limit:
                raise ValueError("clear_at must be at or above 'below' (hysteresis)")
        return self


class Change(_M):
    """An event field changing to a value (e.g. ``state.status`` becomes ``offline``)."""

    type: Literal["change"]
    message_type: str = Field(description="protocol message type, e.g. state, elevator.status")
    field: str
    to: Any
    clear_on: Any = Field(default=None, description="value that clears it (default: any other value)")


class Rate(_M):
    """``metric`` rising (or falling) faster than ``per_min`` over ``window_s``."""

    type: Literal["rate"]
    metric: str
    rise_per_min: float | None = None
    fall_per_min: float | None = None
    window_s: float = Field(default=300, gt=0)

    @model_validator(mode="after")
    def _one(self) -> Rate:
        if (self.rise_per_min is None) == (self.fall_per_min is None):
            raise ValueError("give exactly one of rise_per_min / fall_per_min")
        return self


class Absence(_M):
    """Nothing (or no ``message_type``) from a device for ``after_s``; checked on a timer."""

    type: Literal["absence"]
    after_s: float = Field(gt=0)
    message_type: str | None = None


class Combination(_M):
    """All of ``rules`` active for the same device within ``window_s`` of each other."""

    type: Literal["combination"]
    all_of: list[str] = Field(min_length=2)
    window_s: float = Field(default=600, gt=0)


Condition = Annotated[Threshold | Change | Rate | Absence | Combination, Field(discriminator="type")]


class AlarmAction(_M):
    alarm: dict[str, str] = Field(description="severity (critical/major/minor/warning/info), code, message")

    @model_validator(mode="after")
    def _sev(self) -> AlarmAction:
        sev = self.alarm.get("severity", "major")
        if sev not in ("critical", "major", "minor", "warning", "info"):
            raise ValueError(f"severity {sev!r} is not critical/major/minor/warning/info")
        return self


class CommandAction(_M):
    command: dict[str, Any] = Field(description="name and args of a signed command to the device")


class WebhookAction(_M):
    webhook: dict[str, Any] = Field(description="url, timeout_s (default 5), retries (default 3)")


class WorkOrderAction(_M):
    work_order: dict[str, str] = Field(
        description="title, priority (urgent/high/normal/low); routed to the owner of the device's asset"
    )

    @model_validator(mode="after")
    def _prio(self) -> WorkOrderAction:
        if self.work_order.get("priority", "normal") not in ("urgent", "high", "normal", "low"):
            raise ValueError("work_order priority must be urgent, high, normal or low")
        return self


Action = AlarmAction | CommandAction | WebhookAction | WorkOrderAction


class Rule(_M):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=64)
    description: str = ""
    enabled: bool = True
    match: Match = Match()
    when: Condition
    actions: list[Action] = Field(default_factory=list)


class RuleSet(_M):
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _refs(self) -> RuleSet:
        ids = [r.id for r in self.rules]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate rule id(s): {', '.join(sorted(dup))}")
        for r in self.rules:
            if isinstance(r.when, Combination):
                missing = [x for x in r.when.all_of if x not in ids]
                if missing:
                    raise ValueError(f"rule {r.id}: combination refers to unknown rule(s) {', '.join(missing)}")
        return self


class RulesError(ValueError):
    pass


def load_rules(text: str, source: str = "rules") -> RuleSet:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise RulesError(f"{source} is not valid YAML: {exc}") from None
    try:
        return RuleSet.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        ]
        raise RulesError(f"{source} is invalid:\n" + "\n".join(lines)) from None


def load_rules_file(path: Path) -> RuleSet:
    try:
        return load_rules(path.read_text(), str(path))
    except OSError as exc:
        raise RulesError(f"cannot read rules file {path}: {exc.strerror}") from None
