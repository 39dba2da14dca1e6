"""Cloud settings (pydantic-settings): environment variables ``CE_…`` or a ``.env`` file.

Secrets (API tokens, the command-signing key) are read when the app starts, never at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: roles an API token may carry (departments, residents and grid workers are people with accounts, not machines)
TOKEN_ROLES = ("admin", "operator")


def token_role(entry: str) -> tuple[str, str]:
    """``role:token`` → (role, token); a bare token (no ``:``) acts as an operator. A token never holds a ``:``
    itself, so a role that is not one of :data:`TOKEN_ROLES` is a mistake the settings refuse."""
    role, sep, token = entry.partition(":")
    return (role, token) if sep else ("operator", entry)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CE_", env_file=".env", extra="ignore")

    database_url: str = Field(default="sqlite:///var/civicedge.db", description="SQLAlchemy URL (sqlite or postgresql)")
    live_bridge: bool = Field(
        default=True, description="on PostgreSQL: share the consoles' live events between nodes (LISTEN/NOTIFY)"
    )
    broker_url: str = Field(default="mqtt://127.0.0.1:1883", description="mqtt://[user:pass@]host:port")
    ingest_broker_url: str | None = Field(
        default=None,
        description="the ingestion workers' own broker user (mqtt://ce-ingest:…@host:port); default: broker_url",
    )
    ingest_workers: int = Field(default=1, ge=0, le=64, description="ingestion workers started by `cloud run`")
    ingest_batch_rows: int = Field(default=500, ge=1, le=50_000)
    ingest_batch_ms: int = Field(default=50, ge=1, le=10_000)
    ingest_queue_max: int = Field(
        default=5000,
        ge=100,
        le=1_000_000,
        description="messages a worker holds in memory before it stops reading from the broker (which then keeps them)",
    )
    ingest_stall_s: float = Field(
        default=30,
        gt=0,
        le=3600,
        description="a message waiting this long to be stored makes /healthz unhealthy and raises an operator alarm",
    )
    ingest_share_group: str | None = Field(
        default=None,
        description="MQTT shared-subscription group for several ingestion workers; unset: one worker takes a plain "
        "persistent subscription. Mosquitto 2.0 does not restore shared subscriptions after a restart, so messages "
        "published before the workers resubscribe are lost; a plain subscription loses nothing",
    )
    broker_dynsec: bool = Field(
        default=False,
        description="the broker is locked down with Mosquitto's dynamic-security plugin (civicedge cloud "
        "broker-init); provisioning then issues per-device credentials and ACLs",
    )
    public_broker_host: str = Field(default="127.0.0.1", description="broker address given to new devices")
    public_broker_port: int = Field(default=1883, description="broker port given to new devices (8883 for TLS)")
    broker_ca_file: Path | None = Field(default=None, description="CA certificate of the broker's TLS listener")
    auto_register: bool = Field(default=False, description="accept unknown devices (demo only)")
    influx_url: str | None = Field(default=None, description="InfluxDB 2/3 or VictoriaMetrics base URL")
    influx_token: str = ""
    influx_org: str = "civicedge"
    influx_bucket: str = "telemetry"
    tsdb_queue_max: int = Field(default=200_000, ge=1000, description="points buffered for the TSDB before dropping")
    telemetry_retention_days: float = Field(default=30, gt=0)
    gate_log_retention_days: float = Field(
        default=90, gt=0, description="gate decisions and visitor requests are deleted after this many days"
    )
    visitor_snapshot_retention_days: float = Field(
        default=7, gt=0, description="visitor snapshots (photos of people at the gate) are deleted after this"
    )
    evidence_snapshot_retention_days: float = Field(
        default=90,
        gt=0,
        description="intrusion stills and thrown-object frame strips (evidence for the police) are deleted after this",
    )
    default_language: Literal["en", "zh-CN"] = Field(
        default="en", description="language of new accounts and of the login page: en or zh-CN"
    )
    timezone: str = Field(default="UTC", description="IANA zone for times on the console, e.g. Asia/Shanghai")
    secure_cookies: bool = Field(default=False, description="mark session cookies Secure (serve over HTTPS)")
    ops_need_login: bool = Field(
        default=False,
        description="/metrics, /docs and /openapi.json only for staff (a session or a token); /healthz stays open",
    )
    api_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="bearer tokens for /api, comma-separated; each `role:token` (admin or operator) or "
        "a bare token, which acts as an operator",
    )
    command_key_file: Path = Field(
        default=Path("var/command-key.pem"), description="command key: Ed25519 private key (PEM) signing commands"
    )
    document_key_file: Path | None = Field(
        default=None,
        description="document key: Ed25519 private key (PEM) signing desired config, gallery and allow-list "
        "documents (default: document-key.pem beside the command key)",
    )
    update_key_file: Path = Field(
        default=Path("var/update-key.pem"),
        description="update key: Ed25519 private key signing bundles (civicedge cloud bundle); the cloud needs it "
        "only when CE_UPDATE_PUBLIC_KEY is unset",
    )
    update_public_key: str | None = Field(
        default=None,
        description="the update key's public half (base64): set it and keep the private key offline, where "
        "releases are signed",
    )
    face_key_file: Path | None = Field(
        default=None,
        description="AES key sealing face embeddings in the database (default: face-key beside the command key; "
        "rotate with civicedge cloud rotate-face-key; back it up with the database, apart from it)",
    )
    link_secret_file: Path | None = Field(
        default=None, description="secret for download links (default: link-secret beside the command key)"
    )
    public_url: str = Field(default="http://127.0.0.1:8000", description="this cloud's address as devices reach it")
    command_ttl_s: float = Field(default=60, gt=0, le=86_400)
    media_dir: Path = Field(default=Path("var/media"), description="work-order photos and thumbnails")
    rules_file: Path | None = Field(default=None, description="YAML rule set (see docs/rules.md)")
    log_level: str = Field(default="warning", description="debug, info, warning, error (key=value lines)")
    host: str = "127.0.0.1"
    port: int = 8000

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            return [t.strip() for t in v.split(",") if t.strip()]
        return v

    @field_validator("api_tokens")
    @classmethod
    def _roles(cls, v: list[str]) -> list[str]:
        for entry in v:
            role, token = token_role(entry)
            if role not in TOKEN_ROLES:
                raise ValueError(f"a token's role is one of {', '.join(TOKEN_ROLES)}, not {role!r}")
            if len(token) < 16:
                raise ValueError(
                    "a token is at least 16 characters (python -c 'import secrets; print(secrets.token_urlsafe())')"
                )
        return v

    @field_validator("update_public_key")
    @classmethod
    def _update_public_key(cls, v: str | None) -> str | None:
        if v:
            from protocol.signing import load_public_key

            load_public_key(v)  # a readable ValueError: "not a base64 Ed25519 public key …"
        return v or None

    @property
    def document_key_path(self) -> Path:
        return self.document_key_file or self.command_key_file.with_name("document-key.pem")

    @property
    def face_key_path(self) -> Path:
        return self.face_key_file or self.command_key_file.with_name("face-key")

    @property
    def link_secret_path(self) -> Path:
        return self.link_secret_file or self.command_key_file.with_name("link-secret")

    @property
    def cookies_secure(self) -> bool:
        """Session cookies are ``Secure`` when asked, and whenever the cloud is reached over HTTPS."""
        return self.secure_cookies or self.public_url.lower().startswith("https://")

    @property
    def broker(self) -> tuple[str, int, str | None, str | None]:
        return _split_url(self.broker_url)

    @property
    def ingest_broker(self) -> tuple[str, int, str | None, str | None]:
        return _split_url(self.ingest_broker_url or self.broker_url)


def _split_url(url: str) -> tuple[str, int, str | None, str | None]:
    from urllib.parse import unquote, urlparse

    u = urlparse(url)
    return (
        u.hostname or "127.0.0.1",
        u.port or 1883,
        unquote(u.username) if u.username else None,
        unquote(u.password) if u.password else None,
    )
