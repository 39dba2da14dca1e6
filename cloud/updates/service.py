"""Update bundles and rollouts (like AWS IoT Jobs): a rollout targets a group of devices, sends the signed
``update`` command at most ``rate_per_min`` devices a minute, follows each device through its ``update.status``
reports, fails a device that stays silent past its timeout, and aborts — sending to nobody else — once the
share of failed devices among those finished passes ``max_failure_ratio``.

Devices download the bundle over HTTP with a link that names the device and expires (HMAC with the cloud's own
link secret), so the download needs no account; the bundle itself is checked on the device against the pinned
update key. The cloud holds only that key's public half when ``CE_UPDATE_PUBLIC_KEY`` is set: bundles are signed
where the private key lives (``civicedge cloud bundle --key FILE``) and uploaded already signed.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, func, select, update

from cloud.commands import load_or_create_key, load_or_create_secret
from cloud.db import schema as t
from cloud.ingest.store import now_ms
from cloud.updates import tables as u
from protocol.signing import load_public_key, public_key_b64
from protocol.updates import BundleError, open_bundle

if TYPE_CHECKING:
    from cloud.commands import CommandPublisher
    from cloud.settings import Settings

log = logging.getLogger("civicedge.cloud.updates")
ACTIVE = ("sent", "downloading", "installed", "activated")
FAILED = ("failed", "refused", "rolled_back")
DONE = ("healthy", *FAILED, "skipped")
LINK_TTL_S = 3600
DOWNLOAD_ALLOWANCE_S = 300  # on top of a rollout's health timeout: download, install, restart


class UpdateError(ValueError):
    pass


class Updates:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        commands: Callable[[], CommandPublisher | None],
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.engine = engine
        self._leading = leading  # rollouts advance on one node: the leader
        self.settings = settings
        self._commands = commands
        self.dir = settings.media_dir / "updates"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @functools.cached_property
    def verify_key(self) -> Ed25519PublicKey:
        """The update key's public half: from ``CE_UPDATE_PUBLIC_KEY``, else from the private key file (created on
        first use, mode 0600: a single-machine install that signs its own bundles)."""
        if self.settings.update_public_key:
            return load_public_key(self.settings.update_public_key)
        return load_or_create_key(self.settings.update_key_file).public_key()

    @functools.cached_property
    def _link_secret(self) -> bytes:
        return load_or_create_secret(self.settings.link_secret_path)

    @property
    def public_key(self) -> str:
        return public_key_b64(self.verify_key)

    # --- bundles -----------------------------------------------------------------------------------------------

    def add_bundle(self, data: bytes, by: str) -> dict[str, Any]:
        """Keep a bundle after checking it exactly as a device will (so a bad one never goes out)."""
        try:
            manifest, _files = open_bundle(
                data, self.verify_key, now_ms=now_ms()
            )  # an expired bundle would reach no device
        except BundleError as exc:
            raise UpdateError(str(exc)) from None
        bid = f"{manifest.kind}-{manifest.version}"
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{bid}.tar.gz"
        with self.engine.begin() as conn:
            if conn.execute(select(u.update_bundles.c.id).where(u.update_bundles.c.id == bid)).first():
                raise UpdateError(f"bundle {bid} exists: give the new one another version")
            path.write_bytes(data)
            row = {
                "id": bid,
                "kind": manifest.kind,
                "version": manifest.version,
                "min_version": manifest.min_version,
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "files": len(manifest.files),
                "notes": manifest.notes,
                "path": str(path),
                "created_ms": now_ms(),
                "created_by": by,
            }
            conn.execute(u.update_bundles.insert().values(**row))
        return {k: v for k, v in row.items() if k != "path"}

    def link(self, bundle_id: str, device: str, ttl_s: float = LINK_TTL_S) -> str:
        exp = int(time.time() + ttl_s)
        sig = self._sig(bundle_id, device, exp)
        base = self.settings.public_url.rstrip("/")
        return f"{base}/updates/{bundle_id}/download?device={device}&exp={exp}&sig={sig}"

    def _sig(self, bundle_id: str, device: str, exp: int) -> str:
        return hmac.new(self._link_secret, f"{bundle_id}:{device}:{exp}".encode(), "sha256").hexdigest()

    def bundle_path(self, bundle_id: str, device: str, exp: int, sig: str) -> Path:
        # compared as bytes: the link's sig is whatever the caller typed (compare_digest refuses non-ASCII str)
        if exp < time.time() or not hmac.compare_digest(sig.encode(), self._sig(bundle_id, device, exp).encode()):
            raise PermissionError("this download link is not valid (expired or altered)")
        with self.engine.connect() as conn:
            row = conn.execute(select(u.update_bundles.c.path).where(u.update_bundles.c.id == bundle_id)).first()
        if row is None:
            raise LookupError(f"bundle {bundle_id}")
        return Path(row.path)

    # --- rollouts ----------------------------------------------------------------------------------------------

    def create_rollout(
        self,
        bundle_id: str,
        by: str,
        *,
        site: str | None = None,
        kind: str | None = None,
        devices: list[str] | None = None,
        rate_per_min: float = 10,
        max_failure_ratio: float = 0.2,
        min_executed: int = 2,
        timeout_s: float = 120,
    ) -> dict[str, Any]:
        with self.engine.begin() as conn:
            bundle = conn.execute(select(u.update_bundles).where(u.update_bundles.c.id == bundle_id)).first()
            if bundle is None:
                raise LookupError(f"bundle {bundle_id}")
            q = select(t.devices.c.id).where(t.devices.c.status != "revoked").order_by(t.devices.c.id)
            if site:
                q = q.where(t.devices.c.site_id == site)
            if kind:
                q = q.where(t.devices.c.kind == kind)
            if devices:
                q = q.where(t.devices.c.id.in_(devices))
            targets = [r.id for r in conn.execute(q)]
            if not targets:
                raise UpdateError("no device matches the target (site, kind, devices)")
            rid = f"ro-{secrets.token_hex(4)}"
            now = now_ms()
            conn.execute(
                u.rollouts.insert().values(
                    id=rid,
                    bundle_id=bundle_id,
                    target={"site": site, "kind": kind, "devices": devices},
                    rate_per_min=rate_per_min,
                    max_failure_ratio=max_failure_ratio,
                    min_executed=min_executed,
                    timeout_s=timeout_s,
                    state="running",
                    reason="",
                    created_by=by,
                    created_ms=now,
                )
            )
            conn.execute(
                u.rollout_devices.insert(),
                [
                    {"rollout_id": rid, "device_id": d, "state": "pending", "reason": "", "updated_ms": now}
                    for d in targets
                ],
            )
        self.tick_if_leading()
        return self.get(rid)

    def get(self, rollout_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            r = conn.execute(select(u.rollouts).where(u.rollouts.c.id == rollout_id)).first()
            if r is None:
                raise LookupError(f"rollout {rollout_id}")
            devs = [
                dict(d._mapping)
                for d in conn.execute(
                    select(u.rollout_devices)
                    .where(u.rollout_devices.c.rollout_id == rollout_id)
                    .order_by(u.rollout_devices.c.device_id)
                )
            ]
        counts: dict[str, int] = {}
        for d in devs:
            counts[d["state"]] = counts.get(d["state"], 0) + 1
        return {**dict(r._mapping), "counts": counts, "devices": devs}

    def abort(self, rollout_id: str, reason: str) -> dict[str, Any]:
        with self.engine.begin() as conn:
            n = conn.execute(
                update(u.rollouts)
                .where(u.rollouts.c.id == rollout_id, u.rollouts.c.state == "running")
                .values(state="aborted", reason=reason, finished_ms=now_ms())
            ).rowcount
            if not n:
                raise UpdateError(f"rollout {rollout_id} is not running")
            self._skip_pending(conn, rollout_id)
        return self.get(rollout_id)

    def _skip_pending(self, conn: Any, rollout_id: str) -> None:
        conn.execute(
            update(u.rollout_devices)
            .where(u.rollout_devices.c.rollout_id == rollout_id, u.rollout_devices.c.state == "pending")
            .values(state="skipped", reason="rollout stopped", updated_ms=now_ms())
        )

    # --- what devices say ----------------------------------------------------------------------------------------

    def on_status(self, reports: list[tuple[str, str, str, str | None, str]]) -> None:
        """``update.status`` messages: (device, rollout, state, reason, detail)."""
        with self.engine.begin() as conn:
            for device, rollout, state, reason, detail in reports:
                c = u.rollout_devices.c
                conn.execute(
                    update(u.rollout_devices)
                    .where(c.rollout_id == rollout, c.device_id == device, c.state.not_in(["skipped"]))
                    .values(state=state, reason=f"{reason}: {detail}" if reason else detail, updated_ms=now_ms())
                )
        self.tick_if_leading()

    def on_acks(self, acks: list[tuple[str, str, str]]) -> None:
        """A device that refused the command before reporting anything (bad arguments, busy)."""
        with self.engine.begin() as conn:
            for device, cid, status in acks:
                if status in ("ok", "accepted"):
                    continue
                c = u.rollout_devices.c
                conn.execute(
                    update(u.rollout_devices)
                    .where(c.cid == cid, c.device_id == device, c.state == "sent")
                    .values(state="failed", reason=f"command {status}", updated_ms=now_ms())
                )

    # --- the runner --------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="rollouts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            if not self._leading():
                continue
            try:
                self.tick()
            except Exception:
                log.exception("rollout tick failed")

    def tick_if_leading(self) -> None:
        """Advance now rather than at the next second, where this process is the one that advances rollouts."""
        if self._leading():
            self.tick()

    def tick(self) -> None:
        with self._lock:
            with self.engine.connect() as conn:
                running = [r.id for r in conn.execute(select(u.rollouts.c.id).where(u.rollouts.c.state == "running"))]
            for rid in running:
                self._advance(rid)

    def _advance(self, rid: str) -> None:
        now = now_ms()
        c = u.rollout_devices.c
        with self.engine.begin() as conn:
            # one process advances a rollout at a time (the leader; a row lock, should two believe they lead)
            ro = conn.execute(select(u.rollouts).where(u.rollouts.c.id == rid).with_for_update()).one()
            # devices that went quiet
            conn.execute(
                update(u.rollout_devices)
                .where(
                    c.rollout_id == rid,
                    c.state.in_(ACTIVE),
                    c.updated_ms < now - int((ro.timeout_s + DOWNLOAD_ALLOWANCE_S) * 1000),
                )
                .values(state="failed", reason="no report in time", updated_ms=now)
            )
            counts: dict[str, int] = {
                r[0]: int(r[1])
                for r in conn.execute(select(c.state, func.count()).where(c.rollout_id == rid).group_by(c.state))
            }
            failed = sum(counts.get(s, 0) for s in FAILED)
            finished = failed + counts.get("healthy", 0)
            total = sum(counts.values())
            if finished and failed / finished > ro.max_failure_ratio and finished >= min(ro.min_executed, total):
                conn.execute(
                    update(u.rollouts)
                    .where(u.rollouts.c.id == rid)
                    .values(
                        state="aborted",
                        finished_ms=now,
                        reason=f"{failed} of {finished} devices failed (more than {ro.max_failure_ratio:.0%})",
                    )
                )
                self._skip_pending(conn, rid)
                log.warning("rollout aborted", extra={"rollout": rid, "failed": failed, "finished": finished})
                return
            if sum(counts.get(s, 0) for s in DONE) == total:
                conn.execute(
                    update(u.rollouts).where(u.rollouts.c.id == rid).values(state="completed", finished_ms=now)
                )
                return
            recent = conn.execute(
                select(func.count()).where(c.rollout_id == rid, c.sent_ms.is_not(None), c.sent_ms >= now - 60_000)
            ).scalar_one()
            allowance = int(ro.rate_per_min) - int(recent)
            if allowance <= 0:
                return
            todo = [
                r.device_id
                for r in conn.execute(
                    select(c.device_id)
                    .where(c.rollout_id == rid, c.state == "pending")
                    .order_by(c.device_id)
                    .limit(allowance)
                )
            ]
            bundle = conn.execute(select(u.update_bundles).where(u.update_bundles.c.id == ro.bundle_id)).one()
        pub = self._commands()
        if pub is None:
            return
        for dev in todo:
            args = {
                "rollout": rid,
                "version": bundle.version,
                "url": self.link(bundle.id, dev),
                "timeout_s": ro.timeout_s,
            }
            try:
                sent = pub.send(dev, "update", args, ttl_s=600)
            except ConnectionError:
                return  # the broker is away: the next tick tries again
            except LookupError as exc:
                state, reason, cid = "failed", str(exc), None
            else:
                state, reason, cid = "sent", "", sent["cid"]
            with self.engine.begin() as conn:
                row = (c.rollout_id == rid) & (c.device_id == dev)
                conn.execute(update(u.rollout_devices).where(row).values(cid=cid, sent_ms=now_ms()))
                # the device may have reported already (it answers within milliseconds): keep what it said
                conn.execute(
                    update(u.rollout_devices)
                    .where(row, c.state == "pending")
                    .values(state=state, reason=reason, updated_ms=now_ms())
                )
