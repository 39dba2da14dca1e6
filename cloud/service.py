"""The running cloud node: engine, store, ingestion workers, TSDB exporter, command publisher, metrics."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Engine, delete, select

from cloud import events
from cloud.auth.service import Auth
from cloud.commands import CommandPublisher, load_or_create_key
from cloud.db import schema as t
from cloud.db.engine import make_engine, migrate
from cloud.events import EventStream
from cloud.gate import tables as g
from cloud.gate.service import SUBJECT_LOGS, GateService
from cloud.gate.vault import FaceVault
from cloud.ingest.health import IngestWatch, ingest_report, node_health
from cloud.ingest.store import BatchResult, Store, now_ms
from cloud.ingest.worker import LANES, IngestWorker
from cloud.leader import Leadership
from cloud.live import LiveHub
from cloud.live_bridge import PgLiveBridge
from cloud.metrics import Metrics
from cloud.provisioning.service import Provisioning
from cloud.registry.confidential import is_confidential
from cloud.registry.tables import assets
from cloud.rules.model import load_rules_file
from cloud.rules.runner import RuleContext, RuleRunner
from cloud.settings import Settings
from cloud.tsdb import TsdbExporter
from cloud.updates.service import Updates
from cloud.workorders.service import WorkOrders
from protocol.signing import public_key_b64
from protocol.topics import UPLINK

log = logging.getLogger("civicedge.cloud")
RETENTION_EVERY_S = 3600.0
WATCH_EVERY_S = 1.0
#: pictures kept as evidence (CE_EVIDENCE_SNAPSHOT_RETENTION_DAYS); every other purpose is a visitor's face
EVIDENCE_PURPOSES = ("perimeter", "throwing")


class CloudService:
    def __init__(self, settings: Settings, engine: Engine | None = None, start_mqtt: bool = True) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.engine = engine or make_engine(settings.database_url)
        self.store = Store(self.engine, self.metrics, auto_register=settings.auto_register)
        self.workers: list[IngestWorker] = []
        self.tsdb: TsdbExporter | None = None
        self.commands: CommandPublisher | None = None
        self.start_mqtt = start_mqtt
        self.rules: RuleRunner | None = None
        self.work_orders = WorkOrders(self.engine, settings.media_dir)
        self.gate = GateService(self.engine, lambda: self.commands, FaceVault(settings.face_key_path))
        self.auth = Auth(self.engine)
        self.live = LiveHub(self.metrics)
        #: the node's event stream: every change, published after it committed (cloud.events)
        self.stream = EventStream(self.metrics)
        self._subscribe()
        self.live_bridge: PgLiveBridge | None = None
        if self.engine.dialect.name == "postgresql" and settings.live_bridge:
            self.live_bridge = PgLiveBridge(
                settings.database_url,
                self.live,
                self.metrics,
                on_device=self.store.forget_device,
                on_resync=self.store.forget_all,
                on_rules=self.reload_rules,
            )
        #: the one process that runs the timers (rules' absence and durations, retention, rollouts)
        self.leader = Leadership(
            settings.database_url if self.engine.dialect.name == "postgresql" else None,
            self.metrics,
            compete=start_mqtt,  # a standalone worker neither sends commands nor runs rollouts: it never leads
        )
        self.provisioning = Provisioning(self.engine, settings, self.device_changed)
        self.updates = Updates(self.engine, settings, lambda: self.commands, self.leader.is_leader)
        self._sync: ThreadPoolExecutor | None = None
        self._retention_stop = threading.Event()
        self._retention: threading.Thread | None = None
        self.ingest_watch = IngestWatch(
            self.engine, self.metrics, lambda: self.workers, self.publish_live, WATCH_EVERY_S
        )

    def start(self) -> None:
        migrate(self.engine)
        if self.live_bridge is not None:
            self.live_bridge.start()
        self.leader.start()
        self.gate.stopping.clear()
        self._sync = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gate-sync")
        s = self.settings
        host, port, user, password = s.broker
        if s.influx_url:
            self.tsdb = TsdbExporter(
                s.influx_url, s.influx_token, s.influx_org, s.influx_bucket, self.metrics, s.tsdb_queue_max
            )
            self.tsdb.start()
            self.store.collect_points = True
        if s.rules_file is not None:
            ctx = RuleContext(
                self.engine,
                self.metrics,
                self.stream,
                self.store,
                self.work_orders,
                lambda: self.commands,
                s.command_ttl_s,
            )
            self.rules = RuleRunner(ctx, load_rules_file(s.rules_file), leading=self.leader.is_leader)
            self.store.collect_messages = True
            self.rules.start()
        self._retention_stop.clear()
        self._retention = threading.Thread(target=self._retention_loop, name="retention", daemon=True)
        self._retention.start()
        self.ingest_watch.start()
        if not self.start_mqtt:
            return
        for i in range(s.ingest_workers):
            for w in self.new_workers(f"{os.uname().nodename}-{i}"):
                w.start()
                self.workers.append(w)
        self.provisioning.start()
        self.commands = CommandPublisher(
            self.engine,
            load_or_create_key(s.command_key_file),
            host,
            port,
            user,
            password,
            document_key=load_or_create_key(s.document_key_path),
        )
        self.commands.start()
        self.updates.start()

    def new_workers(self, worker_id: str, shared: bool | None = None) -> list[IngestWorker]:
        """An ingestion worker on this node's store: one per lane (data, and alarms apart), each on its own broker
        connection; a stable ``worker_id`` keeps their broker sessions. ``shared`` (default: when this node runs
        several workers) joins the shared-subscription group."""
        return [self.new_worker(worker_id, shared, lane) for lane in LANES]

    def new_worker(self, worker_id: str, shared: bool | None = None, lane: str | None = None) -> IngestWorker:
        """An ingestion worker for one lane (:data:`cloud.ingest.worker.LANES`), or for every uplink channel."""
        s = self.settings
        if shared is None:
            shared = s.ingest_workers > 1
        host, port, user, password = s.ingest_broker
        return IngestWorker(
            self.store,
            host,
            port,
            channels=LANES[lane] if lane else UPLINK,
            client_id=f"ingest-{worker_id}" + (f"-{lane}" if lane and lane != "data" else ""),
            group=(s.ingest_share_group or "ingest") if shared or s.ingest_share_group else None,
            batch_rows=s.ingest_batch_rows,
            batch_ms=s.ingest_batch_ms,
            username=user,
            password=password,
            on_batch=self._on_batch,
            queue_max=s.ingest_queue_max,
            stall_s=s.ingest_stall_s,
        )

    def _subscribe(self) -> None:
        """Who hears what, in this order: the consoles first (people are waiting for alarms); a gate's
        enrolment before its report (which may follow it); the rest after."""
        st = self.stream
        st.subscribe(events.DomainEvent, self._live, "live")
        st.subscribe(events.FaceEnrolled, self._enrolled, "gate.enrolments")
        st.subscribe(events.CommandAcked, self._acked, "command.acks")
        st.subscribe(events.UpdateReported, self._update_reported, "updates.status")
        st.subscribe(events.SyncReported, self._sync_reported, "gate.sync")
        st.subscribe(events.BatchStored, self._stored, "tsdb+rules")

    def _live(self, evs: list[events.DomainEvent]) -> None:
        live = [d for e in evs if (d := e.live()) is not None]
        if live:
            self.publish_live(live)

    def _later(self, fn: Callable[..., Any], *args: Any) -> None:
        """On the sync thread (publishing waits on the broker: never on ingestion)."""
        if self._sync is not None:
            self._sync.submit(fn, *args)

    def _enrolled(self, evs: list[events.FaceEnrolled]) -> None:
        self._later(self.gate.on_enrolments, [(e.resident_id, e.embedding_b64) for e in evs])

    def _acked(self, evs: list[events.CommandAcked]) -> None:
        acks = [(e.device, e.cid, e.status) for e in evs]
        if self.provisioning.admin is not None:
            self._later(self.provisioning.on_acks, acks)
        self._later(self.updates.on_acks, acks)

    def _update_reported(self, evs: list[events.UpdateReported]) -> None:
        self._later(self.updates.on_status, [(e.device, e.rollout, e.state, e.reason, e.detail) for e in evs])

    def _sync_reported(self, evs: list[events.SyncReported]) -> None:
        wanted = [(e.site, e.device, e.what, e.revision, e.nonce) for e in evs if e.answer]
        if wanted and self._sync is not None and self.gate.want_sync(wanted):
            self._sync.submit(self.gate.answer_wanted)

    def _stored(self, evs: list[events.BatchStored]) -> None:
        for e in evs:
            if self.tsdb is not None and e.points:
                self.tsdb.submit(e.points)
            if self.rules is not None:
                self.rules.on_stored(e)

    def _on_batch(self, res: BatchResult) -> None:
        """A batch committed: what it did goes out on the event stream."""
        self.stream.publish([*res.events, events.BatchStored(res.readings_rows, res.messages, res.points)])

    def device_changed(self, device_id: str) -> None:
        """A device was revoked, reinstated, moved or re-keyed: this node's ingestion and every other node's read
        it again from the registry at its next message."""
        self.store.forget_device(device_id)
        if self.live_bridge is not None:
            self.live_bridge.device_changed(device_id)

    def reload_rules(self) -> int:
        """Read the rules file again (another node's operator reloaded it); a file that no longer loads keeps
        the rules running as they are, and says so in the log and in ``ce_rules_reload_failed_total``."""
        from cloud.rules.model import RulesError, load_rules_file

        if self.rules is None or self.settings.rules_file is None:
            return 0
        try:
            rules = load_rules_file(self.settings.rules_file)
        except RulesError as exc:
            self.metrics.inc("ce_rules_reload_failed_total", 1, "rule reloads asked by another node that failed")
            log.warning("rules not reloaded: the file does not load here", extra={"error": str(exc)[:300]})
            return 0
        self.rules.reload(rules)
        return len(rules.rules)

    def device_keys(self) -> dict[str, str]:
        """The public keys a gateway's config names: ``commands.public_key`` and ``commands.document_key``."""
        s = self.settings
        return {
            "public_key": public_key_b64(load_or_create_key(s.command_key_file)),
            "document_key": public_key_b64(load_or_create_key(s.document_key_path)),
        }

    def publish_live(self, events: list[dict[str, Any]]) -> None:
        """Push events to the consoles, labelled from the registry: alarms with the department owning the
        device's asset, and every event about a device or an asset with whether it is confidential (who may see
        them is decided from these labels; an alarm or work order that could not be labelled is kept from everyone
        but admins and its department)."""
        devs = {e["device_id"] for e in events if e.get("device_id") and "confidential" not in e}
        wos = {e["asset_id"] for e in events if e.get("kind") == "workorder" and e.get("asset_id")}
        owners: dict[str, str | None] = {}
        secret_devs: set[str] = set()
        by_asset: dict[str, bool] = {}
        if devs or wos:
            secret = is_confidential()
            try:
                with self.engine.connect() as conn:
                    if devs:
                        q = select(assets.c.device_id, assets.c.department_id, secret).where(
                            assets.c.device_id.in_(devs)
                        )
                        for d, dept, c in conn.execute(q):
                            if c:  # a device on any confidential asset is confidential, owned by that department
                                secret_devs.add(d)
                                owners[d] = dept
                            else:
                                owners.setdefault(d, dept)
                    if wos:
                        q = select(assets.c.id, secret).where(assets.c.id.in_(wos))
                        by_asset = {a: bool(c) for a, c in conn.execute(q)}
            except Exception:
                log.exception("live channel: department lookup failed")
                owners, secret_devs, by_asset = {}, set(), {}
                devs = wos = set()
            for e in events:
                if "confidential" in e:
                    continue
                if e.get("kind") == "workorder":
                    asset = e.get("asset_id")
                    if not asset or asset in wos:
                        e["confidential"] = by_asset.get(asset, False) if asset else False
                    if e.get("device_id") in secret_devs:
                        e["confidential"] = True
                elif e.get("device_id") in devs:
                    e["confidential"] = e["device_id"] in secret_devs
                    if e.get("kind") == "alarm":
                        e.setdefault("department_id", owners.get(e["device_id"]))
        self.live.publish(*events)
        if self.live_bridge is not None:  # the consoles on the other nodes (labelled here, before it leaves)
            self.live_bridge.send(list(events))

    def _retention_loop(self) -> None:
        while not self._retention_stop.wait(RETENTION_EVERY_S):
            if not self.leader.is_leader():  # once for the whole cloud: on the leader
                continue
            try:
                n = self.apply_retention()
                self.metrics.inc("ce_retention_deleted_total", n, "telemetry rows deleted by retention")
            except Exception:
                log.exception("retention pass failed")

    def stop(self) -> None:
        self._retention_stop.set()
        self.ingest_watch.stop()
        self.live.close()
        if self.live_bridge is not None:
            self.live_bridge.stop()
        self.gate.stopping.set()
        for w in self.workers:  # first: a last batch may still hand work to the sync pool and the rules
            w.stop()
        if self._sync is not None:
            self._sync.shutdown(wait=True, cancel_futures=True)
        if self.rules is not None:
            self.rules.stop()
        self.updates.stop()
        if self.commands:
            self.commands.stop()
        self.provisioning.stop()
        if self.tsdb:
            self.tsdb.stop()
        self.leader.stop()

    def apply_retention(self, now: int | None = None) -> int:
        """Delete what is past its retention period: telemetry; the gate log (decisions, screenings, plate reads,
        lift requests: everything naming a person) and visitor requests; visitor snapshots. Returns the rows
        deleted."""
        s, now = self.settings, now or now_ms()

        def before(days: float) -> int:
            return now - int(days * 86_400_000)

        gate_cut, snap_cut = before(s.gate_log_retention_days), before(s.visitor_snapshot_retention_days)
        evidence_cut = before(s.evidence_snapshot_retention_days)
        m = t.messages.c
        with self.engine.begin() as conn:
            n = conn.execute(delete(t.telemetry).where(t.telemetry.c.ts < before(s.telemetry_retention_days))).rowcount
            n += conn.execute(
                delete(t.messages).where(
                    m.type.in_([*SUBJECT_LOGS, "visitor.request", "visitor.answer"]), m.received_ms < gate_cut
                )
            ).rowcount
            n += conn.execute(delete(g.visitor_requests).where(g.visitor_requests.c.created_ms < gate_cut)).rowcount
            # the cloud decides how long a picture is kept, by its purpose (a fixed list in the protocol); a
            # purpose without its own period is kept no longer than a visitor's face
            mc = g.media.c
            visitors = (mc.purpose == "visitor_request") | ~mc.purpose.in_(EVIDENCE_PURPOSES)
            n += conn.execute(delete(g.media).where(visitors, mc.received_ms < snap_cut)).rowcount
            n += conn.execute(
                delete(g.media).where(mc.purpose.in_(EVIDENCE_PURPOSES), mc.received_ms < evidence_cut)
            ).rowcount
        return int(n or 0)

    def health(self) -> tuple[int, dict[str, Any]]:
        """What this process's ``/healthz`` answers (an API node and a standalone worker alike): the database, the
        ingestion workers, whether it leads, whether it hears the other nodes."""
        self.gauges()
        status, body = node_health(self.engine, self.workers, self.metrics)
        body["leader"] = self.leader.is_leader()
        body["process"] = f"{os.uname().nodename}:{os.getpid()}"
        if self.live_bridge is not None:  # consoles here see other nodes' alarms only while it listens
            body["live_bridge"] = "listening" if self.live_bridge.listening.is_set() else "reconnecting"
        return status, body

    def gauges(self) -> dict[str, Any]:
        """Refresh the ingestion gauges; return the ingestion report (workers, stall, dead letters)."""
        self.ingest_watch.gauges()
        self.metrics.set(
            "ce_ingest_workers_connected",
            sum(w.connected.is_set() for w in self.workers),
            "ingestion workers connected to the broker",
        )
        return ingest_report(self.workers, self.metrics)
