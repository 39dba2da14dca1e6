"""Agent configuration: pydantic, ``extra="forbid"``, loaded from YAML with ``${ENV}`` secrets.

A bad file is refused at start with the field path and the reason (:class:`ConfigError`).
"""

from __future__ import annotations

import copy
import logging
import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.units.barrier_config import BarrierConfig
from edge.units.community_config import GasConfig, PerimeterConfig, ThrowingConfig, WaterConfig
from edge.units.elevator_config import ElevatorConfig
from edge.units.gate_config import GateConfig
from edge.units.parking_config import ParkingLiftConfig
from edge.units.ticker import TickerConfig
from protocol.topics import validate_id

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """A config that cannot be used; the message lists each bad field as ``path: reason``."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceConfig(_Model):
    site: str = Field(description="site id, e.g. 'riverside'")
    id: str = Field(description="this device's id, unique within the site")
    kind: str = Field(default="gateway", description="gate, barrier, parking_lift, elevator, gateway, …")
    signing_key_file: Path | None = Field(
        default=None,
        description="this device's own Ed25519 private key (PEM, mode 0600), made at provisioning: it signs every "
        "message but telemetry readings, and the cloud refuses unsigned ones once it holds the public half",
    )

    def signing_key(self) -> Ed25519PrivateKey | None:
        """The device's own key, or None when it has none; a file that cannot be used is a :class:`ConfigError`."""
        if self.signing_key_file is None:
            return None
        from protocol.signing import load_private_key

        path = self.signing_key_file
        fix = (
            "provision the gateway again (tools/flash.py gateway-bundle), or make a key with "
            f"civicedge edge keygen --out {path} --force and register its public half "
            "(PUT /api/devices/{id}/signing-key)"
        )
        if path.is_dir():
            raise ConfigError(f"device.signing_key_file {path}: it is a folder, not a key file; {fix}")
        try:
            st = path.stat()
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"device.signing_key_file {path}: cannot read it ({exc.strerror}); {fix}") from None
        _check_mode(path, st.st_mode)
        try:
            return load_private_key(data)
        except ValueError as exc:
            raise ConfigError(f"device.signing_key_file {path}: {exc}; {fix}") from None

    @field_validator("site", "id")
    @classmethod
    def _ids(cls, v: str) -> str:
        try:
            return validate_id(v)
        except ValueError as exc:
            raise ValueError(str(exc)) from None


class TlsConfig(_Model):
    ca_file: Path = Field(description="CA bundle that signed the broker's certificate")
    cert_file: Path | None = Field(default=None, description="client certificate (if the broker wants one)")
    key_file: Path | None = None
    insecure: bool = Field(default=False, description="skip host name verification (test rigs only)")

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class MqttConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = Field(default=None, description="use ${ENV_VAR}; never write secrets in the file")
    password_file: Path | None = Field(
        default=None,
        description="file holding the broker password (mode 0600; read at each connection; rotated by the cloud)",
    )
    tls: TlsConfig | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    client_id: str | None = Field(default=None, description="defaults to '{site}.{device}'")
    backoff_max_s: float = Field(default=60.0, gt=0, description="cap of the jittered reconnect backoff")
    inflight: int = Field(default=200, ge=1, le=10_000, description="QoS 1 publishes awaiting PUBACK at once")
    drain_rate_per_s: float = Field(
        default=0, ge=0, description="cap on backlog drain after an outage (0: unlimited); alarms are exempt"
    )


class OutboxConfig(_Model):
    path: Path = Field(default=Path("var/outbox.db"), description="SQLite file (WAL)")
    budget_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024, description="storage budget")
    durability: Literal["power_loss", "process_crash"] = Field(
        default="power_loss",
        description="power_loss: fsync every group commit (synchronous=FULL); process_crash: survive kill -9 only",
    )
    batch_readings: int = Field(default=500, ge=1, le=1000, description="readings packed per telemetry message")
    reserve_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=0,
        le=256 * 1024 * 1024,
        description="space held back beside the database (a ballast file): freed when the disk fills, so alarms "
        "can still be written; 0 turns it off",
    )


class HealthConfig(_Model):
    interval_s: float = Field(default=60.0, gt=0)


class StatusConfig(_Model):
    """The technician's status page and /healthz on the gateway itself (edge.status)."""

    enabled: bool = True
    listen: str = Field(default="127.0.0.1", description="address to serve on; 0.0.0.0 for the site's network")
    port: int = Field(default=8099, ge=0, le=65535, description="0: any free port (tests)")


def _public_key(value: str | None, where: str = "") -> str | None:
    """A public key as devices hold it (32 raw bytes, base64): a private key or garbage is an error here, not a
    key pinned for good at the first start."""
    if not value:
        return value
    if "PRIVATE KEY" in value:
        raise ValueError(
            f"{where + ' holds ' if where else ''}a PRIVATE key: give the public one (civicedge cloud public-key)"
        )
    from protocol.signing import load_public_key

    try:
        load_public_key(value)
    except ValueError:
        raise ValueError(
            f"{where + ': ' if where else ''}not a public key "
            "(base64 of 32 bytes, as civicedge cloud public-key prints it)"
        ) from None
    return value


class CommandsConfig(_Model):
    """The cloud's public keys as provisioned (pinned at the first start: see ``edge.trust``)."""

    public_key: str | None = Field(default=None, description="command key: Ed25519 public key, base64 (32 bytes)")
    public_key_file: Path | None = None
    document_key: str | None = Field(
        default=None, description="document key (config, gallery, allow-list): Ed25519 public key, base64"
    )

    @field_validator("public_key", "document_key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        return _public_key(v)

    @model_validator(mode="after")
    def _one_key(self) -> CommandsConfig:
        if self.public_key and self.public_key_file:
            raise ValueError("give public_key or public_key_file, not both")
        if self.public_key_file is not None and self.public_key_file.exists():
            _public_key(self.public_key_file.read_text().strip(), str(self.public_key_file))
        return self

    def key_b64(self) -> str | None:
        """The pinned key; None when none is given or its file is not there (yet: the installer writes it)."""
        if self.public_key_file is not None:
            try:
                return self.public_key_file.read_text().strip()
            except OSError:
                return None
        return self.public_key


UnitConfig = Annotated[
    TickerConfig
    | GateConfig
    | BarrierConfig
    | ParkingLiftConfig
    | ElevatorConfig
    | GasConfig
    | PerimeterConfig
    | ThrowingConfig
    | WaterConfig,
    Field(discriminator="type"),
]


class UpdatesConfig(_Model):
    """Over-the-air updates of this agent (A/B: versions installed side by side under ``root``, switched by
    ``civicedge edge launch``)."""

    root: Path = Field(description="install root: versions/<v>/, current → the running one (the launcher's)")
    public_key: str | None = Field(default=None, description="update key: Ed25519 public key, base64 (32 bytes)")
    health_s: float = Field(default=30.0, gt=0, le=3600, description="a new version must stay connected this long")
    timeout_s: float = Field(default=120.0, gt=0, le=86_400, description="… and become healthy within this")
    keep: int = Field(default=3, ge=2, le=20, description="versions kept on disk")

    @field_validator("public_key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        return _public_key(v)


class AgentConfig(_Model):
    device: DeviceConfig
    mqtt: MqttConfig = MqttConfig()
    outbox: OutboxConfig = OutboxConfig()
    health: HealthConfig = HealthConfig()
    status: StatusConfig = StatusConfig()
    commands: CommandsConfig = CommandsConfig()
    units: list[UnitConfig] = Field(default_factory=list, description="site units (gate, lift, …) to run")
    updates: UpdatesConfig | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "warning"

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"{self.device.site}.{self.device.id}"

    def provisioned_keys(self) -> dict[str, str | None]:
        """The public keys this config was provisioned with, by role (what :class:`edge.trust.Trust` pins)."""
        return {
            "commands": self.commands.key_b64(),
            "documents": self.commands.document_key,
            "updates": self.updates.public_key if self.updates is not None else None,
        }


def expand_env(text: str, env: dict[str, str] | None = None) -> str:
    """Replace ``${NAME}`` / ``${NAME:-default}``; an unset name without default is an error."""
    env = dict(os.environ) if env is None else env
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        missing.append(name)
        return ""

    out = _ENV.sub(sub, text)
    if missing:
        raise ConfigError(f"environment variable(s) not set: {', '.join(sorted(set(missing)))}")
    return out


def load_yaml(text: str) -> Any:
    """Parse a config file's YAML with its ``${NAME}`` references kept as they are, wherever they stand (also
    unquoted inside a ``{…}`` flow mapping, where their braces would otherwise be YAML)."""
    refs: dict[str, str] = {}
    tag = f"CEENV{secrets.token_hex(8)}N"  # a fresh placeholder each load: text in the file can never pose as one
    while tag in text:
        tag = f"CEENV{secrets.token_hex(8)}N"

    def hold(m: re.Match[str]) -> str:
        key = f"{tag}{len(refs)}X"
        refs[key] = m.group(0)
        return key

    data = yaml.safe_load(_ENV.sub(hold, text))
    if not refs:
        return data
    held = re.compile("|".join(refs))

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return held.sub(lambda m: refs[m.group(0)], v)
        if isinstance(v, dict):
            return {walk(k): walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(data)


def expand_tree(data: Any, env: dict[str, str] | None = None) -> Any:
    """``${NAME}`` references expanded inside the string values of parsed YAML. A value is never parsed as
    YAML again, so a password holding ``#``, ``: `` or ``@`` stays exactly what it is (and never shows up in a
    YAML error)."""
    env = dict(os.environ) if env is None else env
    missing: list[str] = []

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            try:
                return expand_env(v, env)
            except ConfigError:
                missing.extend(m.group(1) for m in _ENV.finditer(v) if m.group(1) not in env and m.group(2) is None)
                return v
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    out = walk(data)
    if missing:
        raise ConfigError(f"environment variable(s) not set: {', '.join(sorted(set(missing)))}")
    return out


def format_errors(exc: ValidationError) -> str:
    lines = []
    for e in exc.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {path}: {msg}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "config") -> AgentConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source} is invalid:\n{format_errors(exc)}") from None


def load_config(path: Path, env: dict[str, str] | None = None) -> AgentConfig:
    """Read, expand and validate a YAML config file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    return load_config_raw(path, env, text)[1]


def load_config_raw(
    path: Path, env: dict[str, str] | None = None, text: str | None = None
) -> tuple[dict[str, Any], AgentConfig]:
    """Like :func:`load_config`, also returning the file's data with ``${ENV}`` references unexpanded
    (what ``set-config`` merges into and writes back, so secrets never land in the file)."""
    if text is None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return raw, parse_config(expand_tree(copy.deepcopy(raw), env), str(path))


def read_secret(path: Path) -> str:
    """A secret kept in its own file (first line). Files others may read are used but logged, once per path:
    secrets belong in mode 0600 files owned by the agent's user."""
    try:
        st = path.stat()
        text = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read the secret file {path}: {exc.strerror}") from None
    _check_mode(path, st.st_mode)
    return text[0].strip() if text else ""


def _check_mode(path: Path, mode: int) -> None:
    if mode & 0o077 and path not in _warned:
        _warned.add(path)
        logging.getLogger("civicedge.config").warning(
            "secret file readable by others", extra={"path": str(path), "fix": f"chmod 600 {path}"}
        )


_warned: set[Path] = set()
