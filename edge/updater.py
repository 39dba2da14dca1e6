"""Over-the-air updates on a gateway, A/B style.

Layout under ``updates.root`` (the launcher, ``civicedge edge launch``, runs whatever ``current`` points at)::

    versions/0.1.0/   versions/0.2.0/   current -> versions/0.2.0   pending.json   healthy   notes.jsonl

The ``update`` command (signed, from a rollout) downloads the bundle, checks it completely
(:func:`protocol.updates.open_bundle`: signature, every hash, kind, minimum version), installs it beside the
running version, records ``pending.json`` (new, previous, deadline), switches ``current`` and asks for a
restart. The new version, once it has stayed connected for ``health_s``, writes ``healthy`` and reports it;
if it does not within ``timeout_s`` — it crashes, hangs, cannot reach the broker — the launcher switches
``current`` back and leaves a note that the previous version reports when it is running again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.commands import CommandError
from edge.config import UpdatesConfig
from edge.outbox import Outbox
from edge.trust import Trust
from protocol.messages import UpdateStatus
from protocol.updates import MAX_BUNDLE_BYTES, BundleError, open_bundle

log = logging.getLogger("civicedge.updater")
KIND = "gateway"


def switch(root: Path, version: str) -> None:
    """Point ``current`` at a version atomically (a new symlink renamed over the old one)."""
    tmp = root / ".current.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(Path("versions") / version)
    os.replace(tmp, root / "current")


def running_version(root: Path) -> str | None:
    try:
        return os.readlink(root / "current").rsplit("/", 1)[-1]
    except OSError:
        return None


def add_note(root: Path, note: dict[str, Any]) -> None:
    with (root / "notes.jsonl").open("a") as f:
        f.write(json.dumps(note) + "\n")
        f.flush()
        os.fsync(f.fileno())


class Updater:
    def __init__(self, cfg: UpdatesConfig, version: str, trust: Trust, outbox: Outbox) -> None:
        self.cfg = cfg
        self.root = cfg.root
        self.version = version
        self.trust = trust  # the pinned update key, and a clock old bundles cannot fool
        self.outbox = outbox
        self.busy = False

    async def _status(
        self, rollout: str, version: str, state: str, reason: str | None = None, detail: str = ""
    ) -> None:
        body = UpdateStatus.model_validate(
            {
                "rollout": rollout,
                "version": version,
                "state": state,
                "reason": reason,
                "detail": detail[:1000],
                "running": self.version,
            }
        )
        await self.outbox.put(body)

    # --- after a start: report what the launcher noted, confirm a pending update -------------------------------

    async def on_start(self, connected: Callable[[], bool]) -> None:
        notes = self.root / "notes.jsonl"
        if notes.exists():
            for line in notes.read_text().splitlines():
                with contextlib.suppress(ValueError, KeyError):
                    n = json.loads(line)
                    await self._status(n["rollout"], n["version"], n["state"], n.get("reason"), n.get("detail", ""))
            notes.unlink()
        pending = self._pending()
        if pending is None or pending.get("version") != self.version:
            return
        # healthy = connected to the broker, continuously, for health_s
        since: float | None = None
        while True:
            now = time.monotonic()
            if connected():
                since = since or now
                if now - since >= self.cfg.health_s:
                    break
            else:
                since = None
            await asyncio.sleep(0.2)
        (self.root / "healthy").write_text(self.version)
        (self.root / "pending.json").unlink(missing_ok=True)  # done: the launcher stops guarding, updates may follow
        await self._status(pending["rollout"], self.version, "healthy")
        log.warning("update healthy", extra={"version": self.version})
        self._prune()

    def _pending(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self.root / "pending.json").read_text()))
        except (OSError, ValueError):
            return None

    def _prune(self) -> None:
        versions = sorted((self.root / "versions").iterdir(), key=lambda p: p.stat().st_mtime)
        keep = {self.version, *(p.name for p in versions[-self.cfg.keep :])}
        for p in versions:
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)

    # --- the command -------------------------------------------------------------------------------------------------

    async def cmd_update(self, args: dict[str, Any]) -> dict[str, Any]:
        rollout, url, version = args.get("rollout"), args.get("url"), args.get("version")
        if not (isinstance(rollout, str) and isinstance(url, str) and isinstance(version, str)):
            raise CommandError("update needs args.rollout, args.url and args.version")
        key = self.trust.key("updates")
        if key is None:
            raise CommandError("no update key pinned (updates.public_key at provisioning; never the command key)")
        if version == self.version:
            await self._status(rollout, version, "healthy", "already_running")
            return {"state": "healthy", "version": version}
        if self.busy or self._pending() is not None:
            raise CommandError("an update is already in progress")
        self.busy = True
        try:
            await self._status(rollout, version, "downloading")
            try:
                data = await asyncio.to_thread(_download, url)
                manifest, files = open_bundle(data, key, kind=KIND, installed=self.version, now_ms=self.trust.now_ms())
                if manifest.version != version:
                    raise BundleError("wrong_version", f"the bundle holds {manifest.version}, not {version}")
            except BundleError as exc:
                await self._status(rollout, version, "refused", exc.reason, exc.detail)
                raise CommandError(f"update refused: {exc}") from None
            except OSError as exc:
                await self._status(rollout, version, "failed", "download", str(exc))
                raise CommandError(f"download failed: {exc}") from None
            try:
                await asyncio.to_thread(self._install, version, files)
            except OSError as exc:  # a full card: nothing half-installed is left, the running version goes on
                await self._status(rollout, version, "failed", "install", f"{exc.strerror or exc}: {exc.filename}")
                raise CommandError(f"install failed: {exc.strerror or exc} ({exc.filename})") from None
            await self._status(rollout, version, "installed")
            pending = {
                "version": version,
                "previous": self.version,
                "rollout": rollout,
                "timeout_s": float(args.get("timeout_s") or self.cfg.timeout_s),
                "at": time.time(),
            }
            _write_json(self.root / "pending.json", pending)
            with contextlib.suppress(FileNotFoundError):
                (self.root / "healthy").unlink()
            switch(self.root, version)
            await self._status(rollout, version, "activated")
            return {"state": "activated", "version": version, "restart": True}
        finally:
            self.busy = False

    def _install(self, version: str, files: dict[str, bytes]) -> None:
        final = self.root / "versions" / version
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=self.root / "versions"))
        try:
            for name, data in files.items():
                p = tmp / name
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:
        data: bytes = r.read(MAX_BUNDLE_BYTES + 1)
    return data


def _write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)
