"""``civicedge edge launch``: the part of a gateway that updates never replace. It runs the agent version that
``<root>/current`` points at, restarts it when it asks (exit 75) or dies, and guards a pending update: if the
new version has not written ``healthy`` within its timeout — or exits before — it switches ``current`` back to
the previous version, notes why (the previous version reports it) and starts that again.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edge.systemd import Notifier
from edge.updater import add_note, switch

log = logging.getLogger("civicedge.launcher")
EXIT_RESTART = 75
# the agent of that version: its own packages first on the path
CHILD = "import sys; sys.path.insert(0, sys.argv.pop(1)); from edge.cli import app; app()"


class Launcher:
    def __init__(self, root: Path, config: Path, backoff_s: float = 2.0) -> None:
        self.root, self.config, self.backoff_s = root, config, backoff_s
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.starts = 0
        self.notifier = Notifier.from_env()
        # the agent pings systemd's watchdog itself (NotifyAccess=all): the watchdog is for it, not for this pid
        self.child_env = {k: v for k, v in os.environ.items() if k != "WATCHDOG_PID"}

    def _pending(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self.root / "pending.json").read_text()))
        except (OSError, ValueError):
            return None

    def _healthy(self, version: str) -> bool:
        try:
            return (self.root / "healthy").read_text().strip() == version
        except OSError:
            return False

    def _rollback(self, pending: dict[str, Any], reason: str) -> None:
        log.warning("rolling back", extra={"from": pending["version"], "to": pending["previous"], "reason": reason})
        self.notifier.status(f"rolled back from {pending['version']} to {pending['previous']}: {reason}")
        switch(self.root, pending["previous"])
        add_note(
            self.root,
            {
                "rollout": pending["rollout"],
                "version": pending["version"],
                "state": "rolled_back",
                "reason": "not_healthy",
                "detail": reason,
            },
        )
        (self.root / "pending.json").unlink(missing_ok=True)

    def stop(self, *_a: object) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.terminate()

    def run(self) -> int:
        while not self.stopping:
            current = (self.root / "current").resolve()
            pending = self._pending()
            if pending is not None and current.name != pending["version"]:
                pending = None  # switched back already
            self.starts += 1
            self.child = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(current), "run", "--config", str(self.config), "--no-reexec"],
                env=self.child_env,
            )
            # a fresh watchdog period for the new agent to start in (the old one's pings stopped with it)
            self.notifier.watchdog()
            deadline = time.monotonic() + float(pending["timeout_s"]) if pending else None
            while self.child.poll() is None and not self.stopping:
                if pending is not None and self._healthy(pending["version"]):
                    (self.root / "pending.json").unlink(missing_ok=True)
                    pending = None
                elif pending is not None and deadline is not None and time.monotonic() > deadline:
                    self._rollback(pending, f"not healthy within {pending['timeout_s']:.0f} s")
                    pending = None
                    self.child.terminate()
                    try:
                        self.child.wait(15)
                    except subprocess.TimeoutExpired:
                        self.child.kill()
                    break
                time.sleep(0.2)
            code = self.child.wait()
            if self.stopping:
                return 0
            if pending is not None and not self._healthy(pending["version"]):
                self._rollback(pending, f"exited with code {code} before it was healthy")
                continue
            if code != EXIT_RESTART:
                log.warning("agent exited; restarting", extra={"code": code})
                time.sleep(self.backoff_s)
        return 0


def main(root: Path, config: Path) -> int:
    if not (root / "current").exists():
        print(
            f"error: {root}/current does not exist: install the gateway first "
            "(civicedge edge install, docs/deployment.md)",
            file=sys.stderr,
        )
        return 2
    launcher = Launcher(root, config)
    signal.signal(signal.SIGTERM, launcher.stop)
    signal.signal(signal.SIGINT, launcher.stop)
    return launcher.run()
