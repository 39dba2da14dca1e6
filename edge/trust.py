"""What the gateway trusts, kept where a config document cannot reach it.

- **Pinned keys.** The three public keys (``commands``, ``documents``, ``updates``: see ``protocol.signing``) are
  taken from the provisioning config at the first start and pinned in the agent's own database. From then on
  the config file, ``set-config`` and the ``cfg`` document can never change them: a key is replaced only by a
  ``rotate-key`` command carrying the new key endorsed by the current key of the same role. A config file whose
  key differs from the pinned one is reported (``trust.key_mismatch``) and ignored; a technician re-pins on the
  device with ``civicedge edge trust-reset`` (as the agent's user, with the agent stopped).
- **Documents.** Config, gallery and allow-list documents are used only when signed by the pinned document key
  for this device and newer than what the device already holds (:meth:`Trust.admit`).
- **An empty copy takes only an answer to its own request.** A gateway whose gallery or allow-list is empty
  (new, wiped, re-flashed) asks for it with a random nonce made at each start (:meth:`Trust.sync_details`) and
  takes only a signed document carrying that nonce back: an old signed snapshot replayed by the broker to a
  gateway that lost its revision is refused (``stale_revision``), and the revision chain protects it from then on.
- **A clock that cannot be turned back.** Gateways often have no real-time clock. Commands carry the cloud's
  clock when it signed them (``issued_ms``) and a deadline, both signed; the latest issue time accepted (and the
  highest deadline minus the longest allowed lifetime) is a lower bound of the cloud's clock that survives
  reboots (:attr:`Trust.floor`). Deadlines, passes and plate validity are judged against the later of that bound
  and the device clock (:meth:`Trust.now_ms`); the replay table forgets command ids by that bound and by count,
  never by the device's clock, and a command whose deadline is below it is refused: a command held back by the
  broker and delivered after a later one was accepted is too old, whatever the device's clock says.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocol.envelope import now_ms
from protocol.errors import Reason, SignatureError
from protocol.limits import MAX_COMMAND_TTL_MS
from protocol.messages import Body
from protocol.signing import KEY_ROLES, load_public_key, verify_document, verify_rotation

log = logging.getLogger("civicedge.edge.trust")

#: command ids remembered at most (the oldest are forgotten first, and the floor rises past them)
MAX_REMEMBERED = 10_000


class Store(Protocol):
    """The agent's database (the outbox's SQLite: one file to keep, fsync'd like the messages)."""

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...

    async def kv_get(self, key: str) -> str | None: ...

    async def kv_set(self, key: str, value: str) -> None: ...


class Trust:
    def __init__(self, device: str, configured: dict[str, str | None], store: Store | None = None) -> None:
        """``configured``: role → base64 public key from the config file (the provisioning values)."""
        self.device = device
        self.configured = {r: configured.get(r) for r in KEY_ROLES}
        self.store = store
        self.keys: dict[str, Ed25519PublicKey | None] = {r: _load(b) for r, b in self.configured.items()}
        self.pinned: dict[str, str | None] = dict(self.configured)
        self.mismatched: list[str] = []  # roles whose configured key differs from the pinned one
        self.floor = 0
        #: what an empty copy asks with (new at every start: an answer to an earlier run's request is not taken)
        self.nonce = secrets.token_urlsafe(12)

    @classmethod
    def refusing(cls) -> Trust:
        """Trusts nothing (no keys): what a unit gets when nobody gave it keys."""
        return cls("", {})

    async def load(self) -> None:
        """Pin the configured keys that are not pinned yet; use the pinned ones; read the floor."""
        assert self.store is not None
        for role in KEY_ROLES:
            pinned = await self.store.kv_get(f"trust.key.{role}")
            wanted = self.configured[role]
            if pinned is None:
                if wanted:
                    await self.store.kv_set(f"trust.key.{role}", wanted)
                pinned = wanted
            elif wanted and wanted != pinned:
                self.mismatched.append(role)
                log.warning(
                    "configured key differs from the pinned one; the pinned key stays",
                    extra={"role": role, "fix": "rotate it with rotate-key, or re-pin with civicedge edge trust-reset"},
                )
            self.pinned[role] = pinned
            self.keys[role] = _load(pinned)
        self.floor = int(await self.store.kv_get("trust.floor") or 0)

    def key(self, role: str) -> Ed25519PublicKey | None:
        return self.keys.get(role)

    def public_keys(self) -> dict[str, str | None]:
        return dict(self.pinned)

    def now_ms(self) -> int:
        """The device's clock, never earlier than what signed commands proved the cloud's clock to be."""
        return max(now_ms(), self.floor)

    # --- documents ---------------------------------------------------------------------------------------

    def admit(self, body: Body, have: int) -> bool:
        """Whether ``body`` (a signed document with a ``revision``) is to be applied over revision ``have``:
        True if newer; False if it is the one already held (a retained copy seen again); raise
        :class:`SignatureError` (``unsigned``, ``bad_signature``, ``stale_revision``) otherwise."""
        verify_document(self.key("documents"), body, self.device)
        revision = int(body.revision)  # type: ignore[attr-defined]
        if have == 0 and hasattr(body, "nonce") and body.nonce != self.nonce:
            raise SignatureError(
                Reason.STALE_REVISION,
                f"{body.TYPE} revision {revision} does not answer this gateway's request for its copy (it holds none "
                "yet, and takes only the answer to its own request)",
            )
        if revision < have:
            raise SignatureError(
                Reason.STALE_REVISION, f"{body.TYPE} revision {revision} is older than the {have} this device holds"
            )
        return revision > have

    def sync_details(self, have: int) -> dict[str, str]:
        """What a gallery / allow-list status report adds: the nonce, while the copy is empty."""
        return {"nonce": self.nonce} if have == 0 else {}

    # --- key rotation ------------------------------------------------------------------------------------

    async def rotate(self, role: str, new_key: str, endorsement: str) -> None:
        """Replace the pinned ``role`` key by ``new_key``, endorsed by the current one."""
        if role not in KEY_ROLES:
            raise SignatureError(Reason.PINNED_KEY, f"unknown key role {role!r} (one of {', '.join(KEY_ROLES)})")
        try:
            load_public_key(new_key)
        except ValueError as exc:
            raise SignatureError(Reason.PINNED_KEY, str(exc)) from None
        current = self.key(role)
        if current is None:
            raise SignatureError(Reason.PINNED_KEY, f"no {role} key is pinned: provision the device again")
        verify_rotation(current, endorsement, device=self.device, role=role, new_public_key=new_key)
        assert self.store is not None
        await self.store.kv_set(f"trust.key.{role}", new_key)
        self.pinned[role], self.keys[role] = new_key, load_public_key(new_key)
        if role in self.mismatched and self.configured[role] == new_key:
            self.mismatched.remove(role)

    # --- commands: replay protection by a floor, not by the clock ----------------------------------------

    async def remember(self, cid: str, name: str, deadline_ms: int, issued_ms: int | None = None) -> None:
        """Record an executed command id; raise :class:`SignatureError` if it was seen (``replayed``) or is
        below the floor (``expired``). Then raise the floor and forget what falls under it or past the count."""
        assert self.store is not None
        if deadline_ms <= self.floor:
            raise SignatureError(
                Reason.EXPIRED, f"command {cid} is older than commands this device has already accepted"
            )
        rows = await self.store.execute(
            "INSERT INTO executed_commands (cid, name, deadline_ms, executed_ms) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(cid) DO NOTHING RETURNING cid",
            (cid, name, deadline_ms, now_ms()),
        )
        if not rows:
            raise SignatureError(Reason.REPLAYED, f"command {cid} was already executed")
        floor = max(self.floor, deadline_ms - MAX_COMMAND_TTL_MS, min(issued_ms or 0, deadline_ms - 1))
        over = await self.store.execute(
            "SELECT max(deadline_ms) FROM (SELECT deadline_ms FROM executed_commands ORDER BY rowid DESC "
            "LIMIT -1 OFFSET ?)",
            (MAX_REMEMBERED,),
        )
        if over and over[0][0] is not None:  # forgotten by count: nothing at or under them passes again
            floor = max(floor, int(over[0][0]))
        if floor > self.floor:
            self.floor = floor
            await self.store.kv_set("trust.floor", str(floor))
            await self.store.execute("DELETE FROM executed_commands WHERE deadline_ms <= ?", (floor,))


def _load(b64: str | None) -> Ed25519PublicKey | None:
    if not b64:
        return None
    try:
        return load_public_key(b64)
    except ValueError:
        log.error("unusable public key in the config", extra={"key": b64[:12]})
        return None
