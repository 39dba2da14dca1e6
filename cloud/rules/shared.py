"""Rule state shared by every process that evaluates rules, in PostgreSQL (table ``rule_state``).

A shared subscription splits a device's messages between workers, so no worker alone sees the whole story of a
device. Each batch's devices are therefore locked for the length of one transaction
(``pg_advisory_xact_lock``, taken in one order so two workers never wait on each other), their rows read,
evaluated, written back, and the alarms the evaluation raises written in the same transaction: a rule fires
once, whichever worker sees its last reading, and its state and its alarm commit together or not at all.
The leader's timer (absence, durations) takes the same locks for the devices that are due.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, and_, select, text
from sqlalchemy.dialects.postgresql import insert

from cloud.rules.engine import State
from cloud.rules.model import Absence, Rule, Threshold
from cloud.rules.tables import rule_state

#: advisory lock namespace of a device's rule state (the leader's lock is (0x0CE1, 1))
LOCK_NS = 0x0CE2
#: devices per transaction (each holds an advisory lock until commit; the server's lock table is finite)
CHUNK = 200

Key = tuple[str, str]


def lock_key(device: str) -> int:
    return zlib.crc32(device.encode()) - 2**31


def chunks(devices: Sequence[str]) -> Iterable[list[str]]:
    for i in range(0, len(devices), CHUNK):
        yield list(devices[i : i + CHUNK])


def lock(conn: Connection, devices: Iterable[str]) -> None:
    """Hold these devices' rule state until the transaction ends (in key order: no deadlock between workers)."""
    keys = sorted({lock_key(d) for d in devices})
    if keys:
        conn.execute(
            text(
                "SELECT count(pg_advisory_xact_lock(:ns, k)) FROM "
                "(SELECT k FROM unnest(CAST(:keys AS integer[])) AS k ORDER BY k) AS ordered"
            ),
            {"ns": LOCK_NS, "keys": keys},
        )


def _snap(st: State) -> tuple[Any, ...]:
    return (st.active, st.since_ms, st.pending_ms, st.last_value, st.last_ms, st.seen_ms, tuple(st.window))


def load(conn: Connection, devices: Sequence[str]) -> tuple[dict[Key, State], dict[Key, tuple[Any, ...]]]:
    """The rows of these devices, and a snapshot to tell what changed."""
    c = rule_state.c
    state: dict[Key, State] = {}
    for r in conn.execute(select(rule_state).where(c.device_id.in_(list(devices)))):
        state[(r.rule_id, r.device_id)] = State(
            active=r.active,
            since_ms=r.since_ms,
            pending_ms=r.pending_ms,
            last_value=r.last_value,
            last_ms=r.last_ms,
            seen_ms=r.seen_ms,
            window=[(int(w[0]), float(w[1])) for w in (r.window or ())],
        )
    return state, {k: _snap(v) for k, v in state.items()}


def save(conn: Connection, state: dict[Key, State], before: dict[Key, tuple[Any, ...]]) -> int:
    """Write what changed; return the rows written."""
    rows = [
        {
            "rule_id": rule,
            "device_id": device,
            "active": st.active,
            "since_ms": st.since_ms,
            "pending_ms": st.pending_ms,
            "last_value": st.last_value,
            "last_ms": st.last_ms,
            "seen_ms": st.seen_ms,
            "window": [list(w) for w in st.window] or None,
        }
        for (rule, device), st in state.items()
        if before.get((rule, device)) != _snap(st)
    ]
    if rows:
        stmt = insert(rule_state)
        cols = ("active", "since_ms", "pending_ms", "last_value", "last_ms", "seen_ms", "window")
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["rule_id", "device_id"], set_={k: stmt.excluded[k] for k in cols}
            ),
            rows,
        )
    return len(rows)


def due(conn: Connection, rules: Sequence[Rule], now: int) -> set[str]:
    """Devices the timer has work for: silent past an absence rule's limit, or in a breach whose duration has
    run out (read without locks: the timer locks them and looks again)."""
    c = rule_state.c
    conds = []
    for r in rules:
        if isinstance(r.when, Absence):
            conds.append(and_(c.rule_id == r.id, ~c.active, c.last_ms <= now - int(r.when.after_s * 1000)))
        elif isinstance(r.when, Threshold) and r.when.for_s > 0:
            conds.append(and_(c.rule_id == r.id, ~c.active, c.pending_ms <= now - int(r.when.for_s * 1000)))
    out: set[str] = set()
    for cond in conds:
        out.update(d for (d,) in conn.execute(select(c.device_id).where(cond)))
    return out


def known(conn: Connection, rule_ids: Sequence[str]) -> set[Key]:
    """(rule, device) rows that exist for these rules."""
    c = rule_state.c
    if not rule_ids:
        return set()
    return {(r, d) for r, d in conn.execute(select(c.rule_id, c.device_id).where(c.rule_id.in_(list(rule_ids))))}


def start_silence(conn: Connection, pairs: Iterable[Key], now: int) -> int:
    """Registered devices never heard from: their silence counts from now (a row another node wrote first
    wins)."""
    rows = [{"rule_id": r, "device_id": d, "active": False, "since_ms": now, "last_ms": now} for r, d in pairs]
    if rows:
        conn.execute(insert(rule_state).on_conflict_do_nothing(index_elements=["rule_id", "device_id"]), rows)
    return len(rows)


def active(conn: Connection) -> list[Key]:
    c = rule_state.c
    return [(r, d) for r, d in conn.execute(select(c.rule_id, c.device_id).where(c.active))]
