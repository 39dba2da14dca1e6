"""Claim-based provisioning (like fleet provisioning with a claim certificate, or provision keys):

1. A technician asks for a claim token for a site (short-lived, single use; only its hash is stored).
2. A new device (or ``tools/flash.py`` on its behalf) presents the token once to ``POST /provision`` and gets
   its own identity: device id, broker user name and password (set at the broker with its own ACL), the
   cloud's command-verification public key, the CA certificate of the broker's TLS listener and an initial
   configuration.
3. Revoking a device disables it at the broker (its connection drops, it cannot log in) and ingestion refuses
   what it sends. Rotation sends the device a new password as a signed command; the broker takes the new
   password once the device has acknowledged writing it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select, update

from cloud.db import schema as t
from cloud.ingest.store import now_ms
from cloud.provisioning import tables as p
from cloud.provisioning.broker import BrokerAdmin, BrokerError, new_password
from protocol.signing import public_key_b64
from protocol.topics import validate_id

if TYPE_CHECKING:
    from cloud.commands import CommandPublisher
    from cloud.settings import Settings

CLAIM_TTL_MAX_S = 7 * 86_400


def signing_key_holder(conn: Any, key: str | None, device: str) -> str | None:
    """The other device already registered with ``key`` (a copied key would let one gateway sign as another)."""
    if not key:
        return None
    q = select(t.devices.c.id).where(t.devices.c.signing_key == key, t.devices.c.id != device).limit(1)
    holder: str | None = conn.execute(q).scalar()
    return holder


class ClaimError(ValueError):
    """A claim that cannot be used: unknown, expired, already used, or for another kind of device."""


def _h(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Provisioning:
    def __init__(self, engine: Engine, settings: Settings, forget: Any) -> None:
        self.engine = engine
        self.settings = settings
        self.admin: BrokerAdmin | None = None  # set when the broker is locked down (CE_BROKER_DYNSEC)
        self._forget = forget  # tell ingestion to re-read a device (revocation)
        # rotations sent and not yet acknowledged: cid → (device, new password); a rotation lost in a restart is
        # simply run again (the old password stays valid until the broker switches)
        self._pending: dict[str, tuple[str, str]] = {}

    def start(self) -> None:
        s = self.settings
        if s.broker_dynsec:
            host, port, user, password = s.broker
            self.admin = BrokerAdmin(host, port, user or "ce-cloud", password)
            self.admin.start()

    def stop(self) -> None:
        if self.admin is not None:
            self.admin.stop()

    # --- claims --------------------------------------------------------------------------------------------

    def new_claim(
        self, site_id: str, by: str, ttl_s: float = 3600, kind: str | None = None, note: str = ""
    ) -> dict[str, Any]:
        if not 60 <= ttl_s <= CLAIM_TTL_MAX_S:
            raise ClaimError(f"ttl_s must be between 60 and {CLAIM_TTL_MAX_S}")
        token = "ce-claim-" + secrets.token_urlsafe(24)
        now = now_ms()
        with self.engine.begin() as conn:
            if conn.execute(select(t.sites.c.id).where(t.sites.c.id == site_id)).first() is None:
                raise LookupError(f"site {site_id}")
            conn.execute(
                p.claims.insert().values(
                    token_hash=_h(token),
                    site_id=site_id,
                    kind=kind,
                    note=note[:200],
                    created_by=by,
                    created_ms=now,
                    expires_ms=now + int(ttl_s * 1000),
                )
            )
        return {"token": token, "site_id": site_id, "kind": kind, "expires_ms": now + int(ttl_s * 1000)}

    def provision(
        self, token: str, kind: str, device_id: str | None = None, name: str = "", signing_key: str | None = None
    ) -> dict[str, Any]:
        """Use a claim once: register the device (with the public half of its own signing key, when it made one)
        and issue its identity. A claim replaces the identity of a device it names: its key too."""
        now = now_ms()
        with self.engine.begin() as conn:
            claim = conn.execute(select(p.claims).where(p.claims.c.token_hash == _h(token))).first()
            if claim is None:
                raise ClaimError("unknown claim token: ask for a new one (POST /api/sites/{site}/claims)")
            if claim.used_ms is not None:
                raise ClaimError(f"this claim token was already used (by {claim.used_by}); ask for a new one")
            if claim.expires_ms < now:
                raise ClaimError("this claim token has expired; ask for a new one")
            if claim.kind and claim.kind != kind:
                raise ClaimError(f"this claim token is for a {claim.kind}, not a {kind}")
            dev = device_id or f"{re.sub(r'[^a-z0-9]+', '-', kind.lower()).strip('-') or 'dev'}-{secrets.token_hex(3)}"
            try:
                validate_id(dev, "device")
            except ValueError as exc:
                raise ClaimError(str(exc)) from None
            existing = conn.execute(select(t.devices).where(t.devices.c.id == dev)).first()
            if existing is not None and existing.site_id != claim.site_id:
                raise ClaimError(f"device {dev} belongs to site {existing.site_id}")
            if existing is not None and existing.kind != kind:  # a claim replaces a board, never takes another
                raise ClaimError(f"device {dev} is a {existing.kind}, not a {kind}: pick another id")
            if existing is not None and existing.status == "revoked":
                raise ClaimError(
                    f"device {dev} was revoked; an admin must re-enable it first (POST /api/devices/{dev}/reinstate)"
                )
            if existing is not None and existing.signing_key and not signing_key:
                raise ClaimError(
                    f"{dev} signs its messages: provision it with its own key (tools/flash.py gateway-bundle), or "
                    "have an admin forget its key first (PUT /api/devices/{id}/signing-key)"
                )
            if (holder := signing_key_holder(conn, signing_key, dev)) is not None:
                raise ClaimError(f"this signing key is registered for {holder}: each gateway makes its own")
            # single use, even when two devices race with the same token
            used = conn.execute(
                update(p.claims)
                .where(p.claims.c.token_hash == claim.token_hash, p.claims.c.used_ms.is_(None))
                .values(used_ms=now, used_by=dev)
            ).rowcount
            if not used:
                raise ClaimError("this claim token was already used; ask for a new one")
            if existing is None:
                conn.execute(
                    t.devices.insert().values(
                        id=dev,
                        site_id=claim.site_id,
                        kind=kind,
                        name=name or dev,
                        status="unknown",
                        created_ms=now,
                        signing_key=signing_key,
                    )
                )
            else:
                conn.execute(update(t.devices).where(t.devices.c.id == dev).values(signing_key=signing_key))
            conn.execute(p.device_credentials.delete().where(p.device_credentials.c.device_id == dev))
            conn.execute(p.device_credentials.insert().values(device_id=dev, username=dev, issued_ms=now))
            password = new_password()
            if self.admin is not None:
                try:  # inside the transaction: a broker that refuses leaves the claim unused
                    self.admin.add_device(claim.site_id, dev, password)
                except BrokerError as exc:
                    raise ConnectionError(f"the broker refused the new identity: {exc}") from None
        self._forget(dev)
        return self.identity(claim.site_id, dev, password)

    def identity(self, site: str, device: str, password: str) -> dict[str, Any]:
        s = self.settings
        ca = Path(s.broker_ca_file).read_text() if s.broker_ca_file else None
        return {
            "device_id": device,
            "site_id": site,
            "mqtt": {
                "host": s.public_broker_host,
                "port": s.public_broker_port,
                "tls": ca is not None,
                "username": device if self.admin is not None else None,
                "password": password if self.admin is not None else None,
            },
            "ca_pem": ca,
            "command_public_key": self._public_key(),
            "document_public_key": self._public_key(self.settings.document_key_path),
            "update_public_key": self._update_public_key(),
            "config": {"device": {"site": site, "id": device}, "health": {"interval_s": 60}},
        }

    def _update_public_key(self) -> str:
        if self.settings.update_public_key:
            return self.settings.update_public_key
        return self._public_key(self.settings.update_key_file)

    def _public_key(self, path: Path | None = None) -> str:
        from cloud.commands import load_or_create_key

        return public_key_b64(load_or_create_key(path or self.settings.command_key_file))

    # --- revocation and rotation -----------------------------------------------------------------------

    def revoke(self, device_id: str, by: str) -> dict[str, Any]:
        with self.engine.begin() as conn:
            if conn.execute(select(t.devices.c.id).where(t.devices.c.id == device_id)).first() is None:
                raise LookupError(f"device {device_id}")
            conn.execute(update(t.devices).where(t.devices.c.id == device_id).values(status="revoked"))
            conn.execute(
                update(p.device_credentials)
                .where(p.device_credentials.c.device_id == device_id)
                .values(revoked_ms=now_ms(), revoked_by=by)
            )
        self._forget(device_id)
        if self.admin is not None:
            try:
                self.admin.disable(device_id)
            except BrokerError as exc:
                if "not found" not in str(exc).lower():
                    raise ConnectionError(f"revoked here, but the broker did not confirm: {exc}") from None
        return {"device_id": device_id, "revoked": True, "broker": self.admin is not None}

    def reinstate(self, device_id: str) -> dict[str, Any]:
        """A revoked device may be claimed again (its old credentials stay revoked: a claim issues new ones)."""
        with self.engine.begin() as conn:
            row = conn.execute(select(t.devices.c.status).where(t.devices.c.id == device_id)).first()
            if row is None:
                raise LookupError(f"device {device_id}")
            if row.status != "revoked":
                raise ClaimError(f"device {device_id} is not revoked")
            conn.execute(update(t.devices).where(t.devices.c.id == device_id).values(status="unknown"))
        self._forget(device_id)
        return {"device_id": device_id, "revoked": False, "next": "claim it again to issue new credentials"}

    def rotate(self, device_id: str, commands: CommandPublisher | None) -> dict[str, Any]:
        """Send the device a new password; the broker switches when the device acknowledges
        (:meth:`on_ack`)."""
        if self.admin is None or commands is None:
            raise ClaimError("credential rotation needs the locked-down broker (CE_BROKER_DYNSEC=true)")
        with self.engine.connect() as conn:
            cred = conn.execute(
                select(p.device_credentials).where(p.device_credentials.c.device_id == device_id)
            ).first()
        if cred is None or cred.revoked_ms is not None:
            raise LookupError(f"active credentials for device {device_id}")
        password = new_password()
        sent = commands.send(device_id, "set-credentials", {"password": password}, ttl_s=300)
        with self.engine.begin() as conn:
            conn.execute(
                update(p.device_credentials)
                .where(p.device_credentials.c.device_id == device_id)
                .values(pending_cid=sent["cid"])
            )
        self._pending[sent["cid"]] = (device_id, password)
        return {"device_id": device_id, "cid": sent["cid"], "status": "sent"}

    def on_acks(self, acks: list[tuple[str, str, str]]) -> None:
        """Command acknowledgements (device, cid, status): a rotation the device confirmed takes effect at the
        broker."""
        for device, cid, status in acks:
            pending = self._pending.pop(cid, None)
            if pending is None or pending[0] != device or self.admin is None:
                continue
            if status == "ok":
                self.admin.set_password(device, pending[1])
                with self.engine.begin() as conn:
                    conn.execute(
                        update(p.device_credentials)
                        .where(p.device_credentials.c.device_id == device)
                        .values(rotated_ms=now_ms(), pending_cid=None)
                    )
