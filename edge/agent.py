"""The gateway agent process: one asyncio TaskGroup owning the uplink, health, and the site units.

Exit codes (``civicedge edge run``): 0 clean stop (SIGTERM/SIGINT), 2 bad config, 3 fatal runtime error,
75 restart requested (``reboot-agent`` or a config change that needs one; the CLI re-executes itself
unless ``--no-reexec``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from civicedge import __version__
from edge.commands import CommandError, CommandHandler, CommandProcessor
from edge.config import AgentConfig, ConfigError, expand_tree, parse_config
from edge.health import snapshot
from edge.outbox import Outbox
from edge.status import StatusServer
from edge.systemd import Notifier
from edge.tasks import cancel_and_wait
from edge.trust import Trust
from edge.units.base import ChannelHandler, Unit, UnitContext
from edge.units.registry import build_unit
from edge.updater import Updater
from edge.uplink import Uplink
from protocol.codec import decode
from protocol.errors import ProtocolError
from protocol.messages import ConfigDocument, DeviceEvent
from protocol.topics import Channel, Topic

log = logging.getLogger("civicedge.edge.agent")

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_FATAL = 3
EXIT_RESTART = 75
LIVE_KEYS = {"health", "log_level"}  # config sections applied without a restart
#: what no config change may touch: the device's identity and the pinned keys (changed by rotate-key only)
# what a config patch may not change: the device's identity and keys, and where its credentials go (a patch
# moving the broker would hand the password the file references to whoever runs the new one)
PINNED = ("device", "commands", "updates.public_key", "mqtt.host", "mqtt.port", "mqtt.tls")


def _mentions_env(value: Any) -> bool:
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, dict):
        return any(_mentions_env(k) or _mentions_env(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_mentions_env(v) for v in value)
    return False


def storage_paths(config: AgentConfig) -> dict[str, str]:
    """Where the device keeps what it has accepted (the agent's database: pinned keys, the replay table, the
    config revision; each gallery and allow-list with its revision): moving one would forget it."""
    paths = {"outbox.path": str(config.outbox.path)}
    for i, unit in enumerate(config.units):
        for name in ("gallery", "allowlist"):
            value = getattr(unit, name, None)
            if isinstance(value, Path):
                paths[f"units[{i}].{name}"] = str(value)
    return paths


def touches_pinned(patch: dict[str, Any]) -> list[str]:
    """The pinned settings a config patch would change. A patch never names environment variables: it would
    reach secrets of the device (and ``${…}`` keys would slip past this check)."""
    if _mentions_env(patch):
        return ["${…} (environment references)"]
    out = []
    for path in PINNED:
        node: Any = patch
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            out.append(path)
    if "updates" in patch and patch["updates"] is None:
        out.append("updates.public_key")
    return out


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in patch.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        config_path: Path | None = None,
        raw: dict[str, Any] | None = None,
        handle_signals: bool = True,
        notifier: Notifier | None = None,
    ) -> None:
        self.handle_signals = handle_signals
        #: systemd's service manager (READY, WATCHDOG, STATUS); does nothing outside systemd
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self.ready = asyncio.Event()
        self.config = config
        self.config_path = config_path
        self.raw = raw if raw is not None else config.model_dump(mode="json")
        self.version = __version__
        self.started_monotonic = time.monotonic()
        self.outbox = Outbox(
            config.outbox.path,
            config.device.id,
            budget_bytes=config.outbox.budget_bytes,
            durability=config.outbox.durability,
            batch_readings=config.outbox.batch_readings,
            reserve_bytes=config.outbox.reserve_bytes,
            signer=config.device.signing_key(),
        )
        if self.outbox.signer is None and any(getattr(u, "type", None) == "gate" for u in config.units):
            log.warning(
                "no device.signing_key_file: messages go unsigned, and the cloud takes no face this gate enrols",
                extra={"fix": "civicedge edge keygen --out FILE, name it in the config, register its public half"},
            )
        self.trust = Trust(config.device.id, config.provisioned_keys(), self.outbox)
        self.commands = CommandProcessor(config.device.id, self.outbox, self.trust)
        self.uplink: Uplink | None = None
        self._stop = asyncio.Event()
        self.exit_code = EXIT_OK
        self._health_wakeup = asyncio.Event()
        self._channel_handlers: dict[Channel, list[ChannelHandler]] = {}
        self.units: list[Unit] = []  # the running site units (for status and tests)
        self.unit_tasks: list[tuple[Unit, asyncio.Task[None]]] = []
        self.status_server: StatusServer | None = None
        for name, handler in (
            ("ping", self._cmd_ping),
            ("reboot-agent", self._cmd_reboot),
            ("set-config", self._cmd_set_config),
            ("outbox-stats", self._cmd_outbox_stats),
            ("set-credentials", self._cmd_set_credentials),
            ("rotate-key", self._cmd_rotate_key),
        ):
            self.commands.register(name, handler)
        self.updater: Updater | None = None
        if config.updates is not None:
            self.updater = Updater(config.updates, self.version, self.trust, self.outbox)
            self.commands.register("update", self._cmd_update)

    # --- lifecycle -------------------------------------------------------------------------------

    def request_stop(self, code: int = EXIT_OK) -> None:
        if not self._stop.is_set():
            self.exit_code = code
            self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if self.handle_signals else ()
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        await self.outbox.open()
        try:
            await self.trust.load()
            self.uplink = Uplink(self.config, self.outbox, self._on_message, self.version)
            await self.outbox.put(DeviceEvent(code="agent.started", message=f"agent {self.version} started"))
            if self.trust.mismatched:
                await self.outbox.put(
                    DeviceEvent(
                        code="trust.key_mismatch",
                        message="the config names other keys than the pinned ones; the pinned keys stay",
                        details={"roles": self.trust.mismatched},
                    )
                )
            uplink = self.uplink
            ctx = UnitContext(
                self.config.device.id,
                self.outbox,
                self.commands.register,
                online=uplink.connected.is_set,
                subscribe=self._subscribe,
                on_connect=uplink.connect_hooks.append,
                trust=self.trust,
            )
            self.ready.set()
            async with asyncio.TaskGroup() as tg:
                uplink_task = tg.create_task(self.uplink.run(), name="uplink")
                others = [tg.create_task(self._health_loop(), name="health")]
                if self.updater is not None:
                    others.append(tg.create_task(self.updater.on_start(uplink.connected.is_set), name="updater"))
                for i, ucfg in enumerate(self.config.units):
                    unit = build_unit(ucfg)
                    self.units.append(unit)
                    task = tg.create_task(unit.run(ctx), name=f"unit:{unit.name}:{i}")
                    self.unit_tasks.append((unit, task))
                    others.append(task)
                await self._start_status_page()
                others.append(tg.create_task(self._service_manager_loop(), name="systemd"))
                await self._stop.wait()
                self.notifier.stopping()
                await cancel_and_wait(*others)
                await self.outbox.put(DeviceEvent(code="agent.stopping", message=f"exit code {self.exit_code}"))
                self.uplink.stop()
                await uplink_task
        finally:
            if self.status_server is not None:
                await self.status_server.close()
            await self.outbox.close()
            for sig in signals:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        return self.exit_code

    async def _start_status_page(self) -> None:
        cfg = self.config.status
        if not cfg.enabled:
            return
        server = StatusServer(self, cfg.listen, cfg.port)
        try:
            await server.start()
        except OSError as exc:  # a taken port must not stop the gate
            log.warning(
                "status page not served",
                extra={"listen": f"{cfg.listen}:{cfg.port}", "error": exc.strerror, "fix": "status.port: another"},
            )
            return
        self.status_server = server

    def status_line(self) -> str:
        """One line for ``systemctl status``: connected or not, what waits in the outbox."""
        online = self.uplink is not None and self.uplink.connected.is_set()
        depth = sum(self.outbox.depth().values())
        return f"{'online' if online else 'offline'}; {len(self.units)} unit(s); outbox {depth} waiting"

    async def _service_manager_loop(self) -> None:
        """READY once the units run, then a watchdog ping every half period from this event loop: if the loop
        stops turning (a blocking call, a deadlock), the pings stop and systemd restarts the service."""
        n = self.notifier
        if not n.enabled:
            return
        await asyncio.sleep(0)  # the units' tasks have started
        n.ready(self.status_line())
        interval = n.ping_interval_s
        last_status = time.monotonic()
        try:
            while True:
                if interval is not None:
                    n.watchdog()
                if time.monotonic() - last_status >= 30:
                    n.status(self.status_line())
                    last_status = time.monotonic()
                await asyncio.sleep(interval if interval is not None else 30)
        finally:
            n.close()

    def wake_health(self) -> None:
        """Send a heartbeat now instead of at the next interval."""
        self._health_wakeup.set()

    async def _health_loop(self) -> None:
        while True:
            await self.outbox.put(snapshot(self))
            self._health_wakeup.clear()
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that races the wakeup
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.health.interval_s):
                    await self._health_wakeup.wait()

    # --- inbound ---------------------------------------------------------------------------------

    def _subscribe(self, channel: Channel, handler: ChannelHandler) -> None:
        self._channel_handlers.setdefault(channel, []).append(handler)

    async def _on_message(self, topic: Topic, payload: bytes) -> None:
        if topic.channel is Channel.CMD:
            await self.commands.handle(topic, payload)
        elif topic.channel is Channel.CFG:
            await self._on_desired_config(topic, payload)
        elif topic.channel in self._channel_handlers:
            for handler in self._channel_handlers[topic.channel]:
                await handler(topic, payload)
        else:
            assert self.uplink is not None
            key = topic.channel.value
            self.uplink.unhandled[key] = self.uplink.unhandled.get(key, 0) + 1

    async def _on_desired_config(self, topic: Topic, payload: bytes) -> None:
        """The retained desired config: applied only when signed by the document key for this device and newer
        than the revision running; every refusal is reported (``config.rejected`` with its reason)."""
        try:
            env = decode(payload, topic)
            assert isinstance(env.body, ConfigDocument)
            applied = await self.outbox.kv_get("config.revision")
            if not self.trust.admit(env.body, int(applied or 0)):
                return  # the retained copy of what runs already
        except ProtocolError as exc:
            await self._config_rejected(exc.reason.value, exc.detail)
            return
        try:
            result = await self.apply_config(env.body.doc)
        except CommandError as exc:
            await self._config_rejected("invalid", str(exc), env.body.revision)
            return
        await self.outbox.kv_set("config.revision", str(env.body.revision))
        await self.outbox.put(
            DeviceEvent(
                code="config.applied",
                message=f"revision {env.body.revision}",
                details={"revision": env.body.revision, **result},
            )
        )

    async def _config_rejected(self, reason: str, detail: str, revision: int | None = None) -> None:
        log.warning("config refused", extra={"reason": reason, "detail": detail[:200]})
        await self.outbox.put(
            DeviceEvent(
                code="config.rejected",
                message=f"{reason}: {detail}"[:1000],
                details={"reason": reason, **({"revision": revision} if revision is not None else {})},
            )
        )

    # --- built-in commands -----------------------------------------------------------------------

    async def _cmd_ping(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True, "version": self.version, "uptime_s": round(time.monotonic() - self.started_monotonic, 3)}

    async def _cmd_reboot(self, args: dict[str, Any]) -> dict[str, Any]:
        asyncio.get_running_loop().call_later(0.2, self.request_stop, EXIT_RESTART)
        return {"restarting": True}

    async def _cmd_outbox_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        stats = self.outbox.stats()
        stats["commands"] = dict(self.commands.counters)
        if self.uplink:
            stats["published"] = self.uplink.published
            stats["connects"] = self.uplink.connects
        return stats

    async def _cmd_set_config(self, args: dict[str, Any]) -> dict[str, Any]:
        patch = args.get("config")
        if not isinstance(patch, dict):
            raise CommandError("set-config needs args.config: a mapping of the settings to change")
        return await self.apply_config(patch)

    async def apply_config(self, patch: dict[str, Any]) -> dict[str, Any]:
        """Validate ``patch`` merged into the running config; write it atomically; apply or restart. The device's
        identity and its keys are not config: a patch that touches them is refused whole."""
        pinned = touches_pinned(patch)
        if pinned:
            raise CommandError(
                f"pinned_key: {', '.join(pinned)} cannot be changed by config "
                "(keys change by rotate-key, the broker by provisioning the device again)"
            )
        merged_raw = deep_merge(self.raw, patch)
        try:
            new = parse_config(expand_tree(copy.deepcopy(merged_raw)), "new config")
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        before, after = storage_paths(self.config), storage_paths(new)
        moved = sorted(k for k in before if k in after and after[k] != before[k])
        if moved or before["outbox.path"] != after["outbox.path"]:
            raise CommandError(
                f"pinned_key: {', '.join(moved)} cannot move by config (the device would forget what it accepted)"
            )
        if self.config_path is not None:
            _atomic_write(self.config_path, yaml.safe_dump(merged_raw, sort_keys=False))
        restart = any(k not in LIVE_KEYS for k in patch)
        self.raw, self.config = merged_raw, new
        if "log_level" in patch:
            logging.getLogger("civicedge").setLevel(new.log_level.upper())
        self._health_wakeup.set()
        if restart:
            asyncio.get_running_loop().call_later(0.2, self.request_stop, EXIT_RESTART)
        return {"applied": True, "restart": restart}

    async def _cmd_set_credentials(self, args: dict[str, Any]) -> dict[str, Any]:
        """A rotated broker password (the command is signed and travels over TLS): written to
        ``mqtt.password_file`` (mode 0600, atomically) and used from the next connection on; the cloud switches
        the broker over once this is acknowledged."""
        password, path = args.get("password"), self.config.mqtt.password_file
        if not isinstance(password, str) or len(password) < 16:
            raise CommandError("set-credentials needs args.password (at least 16 characters)")
        if path is None:
            raise CommandError("this device keeps its password in the config, not in mqtt.password_file")
        await asyncio.to_thread(_atomic_write, path, password + "\n", 0o600)
        return {"written": str(path)}

    async def _cmd_rotate_key(self, args: dict[str, Any]) -> dict[str, Any]:
        """Replace a pinned key: ``role`` (commands, documents, updates), ``public_key`` (the new one, base64) and
        ``endorsement`` (the new key signed by the current key of that role: ``protocol.signing.sign_rotation``).
        The command itself is signed by the current command key like any other."""
        role, new, endorsement = args.get("role"), args.get("public_key"), args.get("endorsement")
        if not (isinstance(role, str) and isinstance(new, str) and isinstance(endorsement, str)):
            raise CommandError("rotate-key needs args.role, args.public_key and args.endorsement")
        try:
            await self.trust.rotate(role, new, endorsement)
        except ProtocolError as exc:
            await self.outbox.put(
                DeviceEvent(
                    code="trust.rotation_refused",
                    message=f"{exc.reason.value}: {exc.detail}"[:1000],
                    details={"reason": exc.reason.value, "role": role},
                )
            )
            raise CommandError(f"{exc.reason.value}: {exc.detail}") from None
        await self.outbox.put(DeviceEvent(code="trust.rotated", message=f"new {role} key", details={"role": role}))
        return {"role": role, "public_key": new}

    async def _cmd_update(self, args: dict[str, Any]) -> dict[str, Any]:
        """Install a signed bundle beside this version and restart into it (see edge.updater)."""
        assert self.updater is not None
        out = await self.updater.cmd_update(args)
        if out.get("restart"):  # after the acknowledgement has gone out
            asyncio.get_running_loop().call_later(1.0, self.request_stop, EXIT_RESTART)
        return out

    def register_command(self, name: str, handler: CommandHandler) -> None:
        self.commands.register(name, handler)


def _atomic_write(path: Path, text: str, mode: int | None = None) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
