"""Runs the rule engine beside ingestion: feeds it each stored batch, ticks it on a timer, and carries out
the actions of its transitions. Alarms are written in their own small transaction; commands and webhooks
run on a thread pool with timeouts, so a slow webhook never holds up ingestion."""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import select

from cloud import events
from cloud.alarms import clear_alarm, raise_alarm
from cloud.db import schema as t
from cloud.db.schema_registry import assets
from cloud.ingest.store import BatchResult, now_ms
from cloud.metrics import Metrics
from cloud.rules.engine import RuleEngine, Transition
from cloud.rules.model import AlarmAction, CommandAction, RuleSet, WebhookAction, WorkOrderAction

if TYPE_CHECKING:
    from cloud.service import CloudService

log = logging.getLogger("civicedge.cloud.rules")
DEVICES_REFRESH_S = 5.0  # how often the timer re-reads the registered devices (absence of never-seen ones)


class RuleRunner:
    def __init__(self, svc: CloudService, rules: RuleSet, tick_s: float = 1.0) -> None:
        self.svc = svc
        self.subtypes: dict[str, str] = {}  # device id → subtype of its asset
        self.engine = RuleEngine(rules, lambda device: self.subtypes.get(device, ""))
        self.metrics: Metrics = svc.metrics
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="rule-action")
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._timer, name="rules-timer", daemon=True)
        self._devices_at = 0.0
        self._devices: list[tuple[str, str, str]] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pool.shutdown(wait=False, cancel_futures=True)

    def reload(self, rules: RuleSet) -> None:
        with self.lock:
            self.engine.load(rules)

    # --- feeding -----------------------------------------------------------------------------------

    def on_batch(self, res: BatchResult) -> None:
        kinds = self.svc.store.kinds
        sites = self.svc.store.sites
        t0 = time.perf_counter()
        out: list[Transition] = []
        with self.lock:
            for dev, metric, ts, value, _unit, _mid in res.readings_rows:
                out += self.engine.observe_reading(sites.get(dev, ""), kinds.get(dev, ""), dev, metric, value, ts)
            for site, dev, type_, body, at in res.messages:
                out += self.engine.observe_message(site, kinds.get(dev, ""), dev, type_, body, at)
        n = len(res.readings_rows) + len(res.messages)
        if n:
            dt = time.perf_counter() - t0
            self.metrics.inc("ce_rules_eval_seconds_total", dt, "time spent evaluating rules")
            self.metrics.inc("ce_rules_observations_total", n, "readings and messages seen by the rules")
        self.execute(out)

    def _timer(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                if time.monotonic() - self._devices_at > DEVICES_REFRESH_S:
                    with self.svc.engine.connect() as conn:
                        self.subtypes = {
                            r.device_id: r.subtype
                            for r in conn.execute(
                                select(assets.c.device_id, assets.c.subtype).where(assets.c.device_id.is_not(None))
                            )
                        }
                        self._devices = [
                            (r.id, r.site_id, r.kind)
                            for r in conn.execute(select(t.devices.c.id, t.devices.c.site_id, t.devices.c.kind))
                        ]
                    self._devices_at = time.monotonic()
                with self.lock:
                    out = self.engine.tick(now_ms(), self._devices)
                self.execute(out)
            except Exception:
                log.exception("rule timer failed")

    # --- actions -----------------------------------------------------------------------------------

    def execute(self, transitions: list[Transition]) -> None:
        for tr in transitions:
            self.metrics.inc(
                "ce_rules_transitions_total",
                1,
                "rule activations and clears",
                rule=tr.rule.id,
                active=str(tr.active).lower(),
            )
            for action in tr.rule.actions:
                try:
                    if isinstance(action, AlarmAction):
                        self._alarm(tr, action)
                    elif isinstance(action, CommandAction) and tr.active:
                        self.pool.submit(self._command, tr, action)
                    elif isinstance(action, WebhookAction):
                        self.pool.submit(self._webhook, tr, action)
                    elif isinstance(action, WorkOrderAction) and tr.active:
                        self._work_order(tr, action)
                except Exception:
                    log.exception("rule action failed", extra={"rule": tr.rule.id})

    def _alarm(self, tr: Transition, action: AlarmAction) -> None:
        key, by, spec = f"rule:{tr.rule.id}", f"rule:{tr.rule.id}", action.alarm
        live: list[events.Event] = []
        with self.svc.engine.begin() as conn:
            if tr.active:
                code = spec.get("code", tr.rule.id)
                severity = spec.get("severity", "major")
                message = spec.get("message", tr.reason) or tr.reason
                alarm_id = raise_alarm(
                    conn,
                    device=tr.device,
                    key=key,
                    code=code,
                    severity=severity,
                    message=message,
                    details={"rule": tr.rule.id, "value": tr.value, "reason": tr.reason},
                    at=tr.at_ms,
                    msg_id="rule",
                    by=by,
                )
                live.append(
                    events.alarm_raised(
                        alarm_id,
                        device=tr.device,
                        site=tr.site,
                        code=code,
                        severity=severity,
                        message=message,
                        at_ms=tr.at_ms,
                    )
                )
            else:
                for alarm_id in clear_alarm(conn, device=tr.device, key=key, at=tr.at_ms, by=by, note=tr.reason):
                    live.append(events.alarm_cleared(alarm_id, device=tr.device, at_ms=tr.at_ms))
        self.svc.publish_live(live)  # committed: the consoles see a rule's alarm as they see a device's

    def _work_order(self, tr: Transition, action: WorkOrderAction) -> None:
        """One open order per (rule, device), routed by the registry to the asset's owner."""
        wos = self.svc.work_orders
        if wos.open_for(tr.rule.id, tr.device) is not None:
            return
        spec = action.work_order
        wo = wos.create(
            title=spec.get("title", tr.rule.description or tr.rule.id),
            source="rule",
            rule_id=tr.rule.id,
            priority=spec.get("priority", "normal"),
            device_id=tr.device,
            description=tr.reason,
            reporter=f"rule:{tr.rule.id}",
        )
        self.svc.publish_live([events.work_order(wo, "created")])

    def _command(self, tr: Transition, action: CommandAction) -> None:
        if self.svc.commands is None:
            return
        spec = action.command
        self.svc.commands.send(
            tr.device, str(spec["name"]), dict(spec.get("args", {})), self.svc.settings.command_ttl_s
        )

    def _webhook(self, tr: Transition, action: WebhookAction) -> None:
        spec: dict[str, Any] = action.webhook
        body = orjson.dumps(
            {
                "rule": tr.rule.id,
                "device": tr.device,
                "site": tr.site,
                "active": tr.active,
                "at_ms": tr.at_ms,
                "value": tr.value,
                "reason": tr.reason,
            }
        )
        retries = int(spec.get("retries", 3))
        for attempt in range(retries + 1):
            try:
                req = urllib.request.Request(
                    str(spec["url"]), data=body, method="POST", headers={"content-type": "application/json"}
                )
                with urllib.request.urlopen(req, timeout=float(spec.get("timeout_s", 5))) as r:
                    if r.status < 300:
                        self.metrics.inc("ce_rules_webhooks_total", 1, "webhook calls", outcome="ok")
                        return
            except (urllib.error.URLError, OSError, TimeoutError):
                pass
            if self._stop.wait(min(30.0, 0.5 * 2**attempt)):
                return
        self.metrics.inc("ce_rules_webhooks_total", 1, "webhook calls", outcome="failed")
        log.warning("webhook failed", extra={"rule": tr.rule.id, "url": spec.get("url")})
