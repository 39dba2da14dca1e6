"""Runs the rule engine beside ingestion: feeds it each stored batch, ticks it on a timer, and carries out
the actions of its transitions. Alarms are written in the transaction that decides them; commands and webhooks
run on a thread pool with timeouts, so a slow webhook never holds up ingestion.

Two ways to keep the state. On SQLite (one process) the engine keeps it in memory. On PostgreSQL, where several
workers may split one device's messages, it lives in the database (:mod:`cloud.rules.shared`): each batch
locks its devices, loads their rows, evaluates, writes them back with the alarms they raise, and commits. The
timer (absence, durations) runs on one process only, the leader (:mod:`cloud.leader`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import IntegrityError

from cloud import events
from cloud.alarms.lifecycle import clear_alarm, raise_alarm
from cloud.commands import CommandPublisher
from cloud.db import schema as t
from cloud.events import EventStream
from cloud.ingest.store import Store, now_ms
from cloud.metrics import Metrics
from cloud.registry.tables import assets
from cloud.rules import shared
from cloud.rules.engine import RuleEngine, Transition
from cloud.rules.model import Absence, AlarmAction, CommandAction, RuleSet, WebhookAction, WorkOrderAction
from cloud.workorders.service import WorkOrders

log = logging.getLogger("civicedge.cloud.rules")
DEVICES_REFRESH_S = 5.0
#: a reading stamped further ahead of the cloud's clock than this is not evaluated
FUTURE_MS = 5 * 60_000  # how often the timer re-reads the registered devices (absence of never-seen ones)


@dataclass(frozen=True, slots=True)
class RuleContext:
    """What the rules need from the node, and nothing more."""

    db: Engine
    metrics: Metrics
    stream: EventStream  # where the alarms and work orders they raise are published, after commit
    store: Store  # its view of the registry: each device's site and kind
    work_orders: WorkOrders
    commands: Callable[[], CommandPublisher | None]  # (the publisher starts with the node)
    command_ttl_s: float


class RuleRunner:
    def __init__(
        self,
        ctx: RuleContext,
        rules: RuleSet,
        tick_s: float = 1.0,
        leading: Callable[[], bool] = lambda: True,
        in_database: bool | None = None,
    ) -> None:
        self.ctx = ctx
        self.db = ctx.db
        self.subtypes: dict[str, str] = {}  # device id → subtype of its asset
        self.engine = RuleEngine(rules, lambda device: self.subtypes.get(device, ""))
        #: the state lives in PostgreSQL, shared by every process (else in this process's memory)
        self.in_database = self.db.dialect.name == "postgresql" if in_database is None else in_database
        self.leading = leading  # the timer runs on one process: the leader
        self.metrics: Metrics = ctx.metrics
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="rule-action")
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._timer, name="rules-timer", daemon=True)
        self._devices_at = 0.0
        self._devices: list[tuple[str, str, str]] = []
        self._silence_started = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pool.shutdown(wait=False, cancel_futures=True)

    def reload(self, rules: RuleSet) -> None:
        with self.lock:
            self.engine.load(rules)
            self._silence_started = False

    def active(self) -> list[tuple[str, str]]:
        """(rule, device) pairs active now."""
        if not self.in_database:
            with self.lock:
                return self.engine.active()
        ids = {r.id for r in self.engine.rules}
        with self.db.connect() as conn:
            return [k for k in shared.active(conn) if k[0] in ids]

    # --- feeding -----------------------------------------------------------------------------------

    def on_stored(self, batch: events.BatchStored) -> None:
        """Evaluate what an ingestion batch stored (subscribed to the node's event stream)."""
        if not batch.readings and not batch.messages:
            return
        if self.in_database:
            devices = sorted({r[0] for r in batch.readings} | {m[1] for m in batch.messages})
            for group in shared.chunks(devices):
                mine = set(group)
                rows = [r for r in batch.readings if r[0] in mine]
                msgs = [m for m in batch.messages if m[1] in mine]
                self._shared(group, functools.partial(self._observe, rows, msgs))
            return
        with self.lock:
            out = self._observe(batch.readings, batch.messages)
        self.execute(out)

    def _observe(self, rows: list[Any], messages: list[Any]) -> list[Transition]:
        kinds, sites = self.ctx.store.kinds, self.ctx.store.sites
        t0 = time.perf_counter()
        out: list[Transition] = []
        ahead = now_ms() + FUTURE_MS
        engine = self.engine
        heard: set[str] = set()  # devices already noted as heard in this batch
        for dev, metric, ts, value, _unit, _mid in rows:
            if ts > ahead:  # a clock far ahead: stored, but it must not make every later reading look old
                self.metrics.inc("ce_rules_future_readings_total", 1, "readings from the future the rules skipped")
                continue
            if engine.watches(metric):
                out += engine.observe_reading(sites.get(dev, ""), kinds.get(dev, ""), dev, metric, value, ts)
            elif dev not in heard:  # a metric no rule looks at: the device was heard, once a batch is enough
                heard.add(dev)
                engine.heard(dev, sites.get(dev, ""), kinds.get(dev, ""))
        for site, dev, type_, body, at in messages:
            out += self.engine.observe_message(site, kinds.get(dev, ""), dev, type_, body, at)
        n = len(rows) + len(messages)
        self.metrics.inc("ce_rules_eval_seconds_total", time.perf_counter() - t0, "time spent evaluating rules")
        self.metrics.inc("ce_rules_observations_total", n, "readings and messages seen by the rules")
        return out

    def _shared(
        self,
        devices: list[str],
        evaluate: Callable[[], list[Transition]],
        seen: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        """Evaluate under these devices' locks, on their rows; save the rows and the alarms together."""
        with self.db.begin() as conn:
            shared.lock(conn, devices)
            state, before = shared.load(conn, devices)
            with self.lock:
                self.engine.state, self.engine.seen = state, dict(seen or {})
                try:
                    out = evaluate()
                finally:
                    self.engine.state, self.engine.seen = {}, {}
                    self.engine.forget_timers()  # the database keeps what is due, not this process
            shared.save(conn, state, before)
            live = self._write_alarms(conn, out)
        self.ctx.stream.publish(live)  # committed: the consoles see a rule's alarm as they see a device's
        self._after(out)

    def _timer(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self._refresh()
                if not self.leading():
                    continue
                if self.in_database:
                    self._tick_shared(now_ms())
                else:
                    with self.lock:
                        out = self.engine.tick(now_ms(), self._devices)
                    self.execute(out)
            except Exception:
                log.exception("rule timer failed")

    def _refresh(self) -> None:
        if time.monotonic() - self._devices_at <= DEVICES_REFRESH_S:
            return
        before = self.subtypes
        with self.db.connect() as conn:
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
        self._silence_started = False
        changed = {d for d in before.keys() | self.subtypes.keys() if before.get(d) != self.subtypes.get(d)}
        if changed:
            with self.lock:
                self.engine.reschedule(changed)

    def _tick_shared(self, now: int) -> None:
        where = {d: (s, k) for d, s, k in self._devices}
        absence = [r for r in self.engine.rules if isinstance(r.when, Absence)]
        with self.db.begin() as conn:
            if not self._silence_started:  # registered devices never heard from: silent from now
                have = shared.known(conn, [r.id for r in absence])
                missing = [
                    (r.id, d)
                    for r in absence
                    for d, (s, k) in where.items()
                    if (r.id, d) not in have and self.engine.matches(r, s, k, d)
                ]
                shared.start_silence(conn, missing, now)
                self._silence_started = True
            due = sorted(shared.due(conn, self.engine.rules, now))
        for group in shared.chunks(due):
            seen = {d: where[d] for d in group if d in where}
            self._shared(group, lambda: self.engine.tick(now, loaded=True), seen)

    # --- actions -----------------------------------------------------------------------------------

    def execute(self, transitions: list[Transition]) -> None:
        """Carry out what the transitions ask (state kept in memory): alarms now, the rest after."""
        if not transitions:
            return
        with self.db.begin() as conn:
            live = self._write_alarms(conn, transitions)
        self.ctx.stream.publish(live)
        self._after(transitions)

    def _write_alarms(self, conn: Connection, transitions: list[Transition]) -> list[events.DomainEvent]:
        live: list[events.DomainEvent] = []
        for tr in transitions:
            self.metrics.inc(
                "ce_rules_transitions_total",
                1,
                "rule activations and clears",
                rule=tr.rule.id,
                active=str(tr.active).lower(),
            )
            for action in tr.rule.actions:
                if not isinstance(action, AlarmAction):
                    continue
                try:
                    # one alarm that cannot be written does not hold up the others (PostgreSQL aborts a whole
                    # transaction on an error; SQLite carries on without a savepoint)
                    with conn.begin_nested() if conn.dialect.name == "postgresql" else contextlib.nullcontext():
                        live += self._alarm(conn, tr, action)
                except Exception:
                    log.exception("rule alarm failed", extra={"rule": tr.rule.id})
        return live

    def _after(self, transitions: list[Transition]) -> None:
        for tr in transitions:
            for action in tr.rule.actions:
                try:
                    if isinstance(action, CommandAction) and tr.active:
                        self.pool.submit(self._command, tr, action)
                    elif isinstance(action, WebhookAction):
                        self.pool.submit(self._webhook, tr, action)
                    elif isinstance(action, WorkOrderAction) and tr.active:
                        self._work_order(tr, action)
                except Exception:
                    log.exception("rule action failed", extra={"rule": tr.rule.id})

    def _alarm(self, conn: Connection, tr: Transition, action: AlarmAction) -> list[events.DomainEvent]:
        key, by, spec = f"rule:{tr.rule.id}", f"rule:{tr.rule.id}", action.alarm
        if not tr.active:
            return [
                events.AlarmChanged(alarm_id, tr.device, tr.at_ms, "cleared")
                for alarm_id in clear_alarm(conn, device=tr.device, key=key, at=tr.at_ms, by=by, note=tr.reason)
            ]
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
        return [events.AlarmRaised(alarm_id, tr.device, tr.site, code, severity, message, tr.at_ms)]

    def _work_order(self, tr: Transition, action: WorkOrderAction) -> None:
        """One open order per (rule, device), routed by the registry to the asset's owner."""
        wos = self.ctx.work_orders
        if wos.open_for(tr.rule.id, tr.device) is not None:
            return
        spec = action.work_order
        try:
            wo = wos.create(
                title=spec.get("title", tr.rule.description or tr.rule.id),
                source="rule",
                rule_id=tr.rule.id,
                priority=spec.get("priority", "normal"),
                device_id=tr.device,
                description=tr.reason,
                reporter=f"rule:{tr.rule.id}",
            )
        except IntegrityError:  # another process opened it a moment ago (uq_work_orders_open_rule)
            return
        self.ctx.stream.publish([events.WorkOrderChanged(wo, "created")])

    def _command(self, tr: Transition, action: CommandAction) -> None:
        commands = self.ctx.commands()
        if commands is None:
            return
        spec = action.command
        commands.send(tr.device, str(spec["name"]), dict(spec.get("args", {})), self.ctx.command_ttl_s)

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
