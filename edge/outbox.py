"""Store-and-forward outbox: every uplink message is committed to SQLite before it is published, and
deleted only after the broker acknowledged it (PUBACK).

- Lanes ``alarm`` > ``event`` > ``telemetry`` > ``bulk``; in order within a lane.
- Group commit: concurrent ``put`` calls are written in one transaction by one writer thread, and each call
  returns only once its message is committed (fsync'd with ``durability="power_loss"``).
- Telemetry readings are stored one row each and sealed into batch messages (up to ``batch_readings``) just
  before they are sent, so a backlog goes out as few large messages; a sealed batch keeps its message id,
  so a resend after a crash is a duplicate the cloud drops, never a different message.
- A byte budget: when full, ``bulk`` then ``telemetry`` are shed oldest-first and counted; alarms and
  events are never shed (new telemetry is refused instead when only they remain).
- A really full disk (an SD card filled by something else): a ballast file of ``reserve_bytes`` kept beside the
  database is given up, old telemetry is shed, and until space returns telemetry and bulk are refused (counted)
  while alarms and events are still written; the outbox raises the alarm ``storage.full`` itself and clears it
  when space is back (checked every ``recheck_s``), then takes its ballast back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sqlite3
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from edge import store
from edge.ballast import Ballast, disk_full
from protocol.envelope import new_id, now_ms
from protocol.messages import LANE_PRIORITY, AlarmClear, AlarmRaise, Body, Lane, TelemetryBatch
from protocol.signing import sign_uplink, signs
from protocol.topics import Channel

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

LANES: tuple[Lane, ...] = tuple(sorted(Lane, key=lambda lane: LANE_PRIORITY[lane]))
_LANE_NO = {lane: LANE_PRIORITY[lane] for lane in Lane}
_NO_LANE = {v: k for k, v in _LANE_NO.items()}
_HEAD = b'{"v":1,"id":"%s","dev":"%s","seq":'
_TAIL = b',"ts":%d,"type":"%s","body":%s}'
_TAIL_SIGNED = b',"ts":%d,"type":"%s","body":%s,"sig":"%s"}'
ROW_OVERHEAD = 48  # bytes per row beyond the payload, for the budget (page/index overhead, measured)
_CHANNEL_FOR_LANE = {Lane.ALARM: Channel.ALM, Lane.EVENT: Channel.EVT, Lane.TELEMETRY: Channel.TELE}
log = logging.getLogger("civicedge.edge.outbox")


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open (SQLite ends it by itself after some errors, SQLITE_FULL among
    them: a plain ROLLBACK would then raise and hide the error that matters)."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


class OutboxFull(RuntimeError):
    """A telemetry or bulk message refused because the budget holds only alarms and events."""


@dataclass(frozen=True, slots=True)
class OutMessage:
    """A committed message waiting to be published."""

    row: int
    lane: Lane
    channel: Channel
    type: str
    seq: int
    payload: bytes


@dataclass(slots=True)
class _Pending:
    lane: Lane
    channel: str
    type: str  # "reading" for a bare telemetry reading
    head: bytes  # the envelope up to its seq (or the whole reading)
    tail: bytes  # the envelope after its seq
    future: asyncio.Future[Any]  # its seq; with ``many``, the list of seqs of every message of its put_many
    payload: bytes = b""
    many: bool = False


_channel_cache: dict[type[Body], str] = {}


def channel_for(body: Body) -> Channel:
    """The channel a body goes out on (its only one, or the one matching its lane)."""
    if len(body.CHANNELS) == 1:
        return next(iter(body.CHANNELS))
    preferred = _CHANNEL_FOR_LANE.get(body.LANE, Channel.EVT)
    return preferred if preferred in body.CHANNELS else sorted(body.CHANNELS)[0]


class Outbox:
    """The agent's outbox. Use ``async with Outbox(...) as ob:``; all SQLite work runs on one thread."""

    def __init__(
        self,
        path: Path,
        device: str,
        *,
        budget_bytes: int = 256 * 1024 * 1024,
        durability: str = "power_loss",
        batch_readings: int = 500,
        signer: Ed25519PrivateKey | None = None,
        reserve_bytes: int = 0,
        recheck_s: float = 5.0,
    ) -> None:
        self.path = Path(path)
        #: the ballast file given up when the disk fills (so alarms can still be written)
        self.ballast = Ballast(self.path.with_name(self.path.name + ".reserve"), reserve_bytes)
        self.reserve_path = self.ballast.path
        self.recheck_s = recheck_s
        #: "ok" or "full" (the filesystem, not the budget); changes raise and clear the storage.full alarm
        self.storage: Literal["ok", "full"] = "ok"
        self._storage_reported = "ok"
        self._recheck = recheck_s  # grows while the disk keeps filling up again (see _enter_full)
        self._recovered_at = -1e9
        self._next_check = 0.0
        #: the device's own key: every message but telemetry readings is signed with it (protocol.signing)
        self.signer = signer
        self.device = device
        self._dev = device.encode()
        self.budget_bytes = budget_bytes
        self.durability = durability
        self.batch_readings = batch_readings
        self._exec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._conn: sqlite3.Connection | None = None
        self._pending: list[_Pending] = []
        self._acks: list[int] = []
        self._flushing = False
        self._ack_flushing = False
        self._next_seq: dict[Lane, int] = {}
        self._count: dict[Lane, int] = dict.fromkeys(Lane, 0)
        self._bytes: dict[Lane, int] = dict.fromkeys(Lane, 0)
        self._readings_pending = 0
        self.counters: dict[str, int] = {}
        self.new_data = asyncio.Event()
        self.last_commit_ms: int | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> Outbox:
        await self._run(self._open_sync)
        return self

    async def close(self) -> None:
        while self._pending or self._flushing or self._acks or self._ack_flushing:
            await asyncio.sleep(0.001)
        await self._run(self._close_sync)
        self._exec.shutdown(wait=True)

    async def __aenter__(self) -> Outbox:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _open_sync(self) -> None:
        try:
            conn = store.connect(self.path, self.durability)
        except (sqlite3.Error, OSError):
            if not self.ballast.exists():
                raise
            # the card filled while the agent was stopped: its ballast from the last run makes room to open
            self.ballast.give_up()
            conn = store.connect(self.path, self.durability)
        self._conn = conn
        if not self.ballast.take():  # no room even for the ballast: as full as a card gets
            log.warning(
                "disk nearly full at start: telemetry refused until space returns",
                extra={"path": str(self.path.parent), "reserve_bytes": self.ballast.size},
            )
            self.storage = "full"
        for lane_no, nxt in conn.execute("SELECT lane, next_seq FROM lane_seq"):
            self._next_seq[_NO_LANE[lane_no]] = nxt
        for lane in Lane:
            self._next_seq.setdefault(lane, 1)
        self._load_sizes()
        self.counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())

    def _load_sizes(self) -> None:
        conn = self.conn
        self._count = dict.fromkeys(Lane, 0)
        self._bytes = dict.fromkeys(Lane, 0)
        for lane_no, n, size in conn.execute("SELECT lane, count(*), coalesce(sum(size), 0) FROM outbox GROUP BY lane"):
            self._count[_NO_LANE[lane_no]] = n
            self._bytes[_NO_LANE[lane_no]] = size + n * ROW_OVERHEAD
        n, size = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM readings").fetchone()
        self._readings_pending = n
        self._bytes[Lane.TELEMETRY] += size + n * ROW_OVERHEAD

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._save_counters()
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._exec, fn, *args)

    @property
    def conn(self) -> sqlite3.Connection:
        assert self._conn is not None, "outbox is not open"
        return self._conn

    # --- producers -----------------------------------------------------------------------------

    def _alloc_seq(self, lane: Lane) -> int:
        seq = self._next_seq[lane]
        self._next_seq[lane] = seq + 1
        return seq

    def put(self, body: Body, *, ts: int | None = None, lane: Lane | None = None) -> asyncio.Future[int]:
        """Commit ``body`` (wrapped in its envelope) to the outbox. Await the result: it is the message's seq,
        delivered once the message is on disk. (A plain function returning a future, not a coroutine: this
        is the hot path of every producer.)"""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append(self._encode(body, ts, lane, fut))
        self._wake()
        return fut

    def put_many(self, bodies: Iterable[Body], *, lane: Lane | None = None) -> asyncio.Future[list[int]]:
        """Commit several messages of one lane in one call (await the result: their seqs, in order), for a
        producer that has many at once (a unit's events, a burst of readings): one future and one wake-up for all
        of them, and all in the same transaction — committed together or refused together."""
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        many = [self._encode(body, None, lane, fut, many=True) for body in bodies]
        if len({p.lane for p in many}) > 1:
            # whole or nothing across lanes would let a refused reading take an alarm down with it
            raise ValueError(
                "put_many takes messages of one lane (alarms, events, telemetry or bulk): call it per lane"
            )
        if not many:
            fut.set_result([])
            return fut
        self._pending.extend(many)
        self._wake()
        return fut

    def _encode(
        self, body: Body, ts: int | None, lane: Lane | None, fut: asyncio.Future[Any], many: bool = False
    ) -> _Pending:
        cls = type(body)
        channel = _channel_cache.get(cls)
        if channel is None:
            channel = _channel_cache[cls] = channel_for(body).value
        data: bytes = cls.__pydantic_serializer__.to_json(body, exclude_none=True)
        # All the encoding happens here on the event loop; the writer thread only splices in the seq
        # (assigned in commit order) and runs SQL, which releases the GIL.
        msg_id, t = new_id(), now_ms() if ts is None else ts
        head = _HEAD % (msg_id.encode(), self._dev)
        if self.signer is not None and signs(body):
            sig = sign_uplink(self.signer, msg_id=msg_id, device=self.device, ts=t, body=body)
            tail = _TAIL_SIGNED % (t, body.TYPE.encode(), data, sig.encode())
        else:
            tail = _TAIL % (t, body.TYPE.encode(), data)
        return _Pending(lane or body.LANE, channel, body.TYPE, head, tail, fut, many=many)

    def _wake(self) -> None:
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._start_flush)

    def put_reading(
        self,
        metric: str,
        value: float,
        *,
        ts: int | None = None,
        unit: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> asyncio.Future[int]:
        """Commit one telemetry reading (await the result); it goes out packed with others in a batch."""
        reading: dict[str, Any] = {
            "metric": metric,
            "value": float(value),
            "ts": now_ms() if ts is None else ts,
        }
        if unit:
            reading["unit"] = unit
        if tags:
            reading["tags"] = tags
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(Lane.TELEMETRY, "", "reading", orjson.dumps(reading), b"", fut))
        self._wake()
        return fut

    def _start_flush(self) -> None:
        asyncio.get_running_loop().create_task(self._flush(), name="outbox-commit")

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    results: list[int | BaseException] = await self._run(self._write_guarded, batch)
                except Exception as exc:  # disk error: every caller of this batch learns it
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(exc)
                    continue
                groups: dict[int, tuple[asyncio.Future[Any], list[int]]] = {}  # put_many's futures, their seqs
                for p, r in zip(batch, results, strict=True):
                    if p.future.done():
                        continue
                    if isinstance(r, BaseException):
                        p.future.set_exception(r)  # for put_many: one refused, all refused (none is in)
                    elif p.many:
                        groups.setdefault(id(p.future), (p.future, []))[1].append(r)
                    else:
                        p.future.set_result(r)
                for fut, seqs in groups.values():
                    if not fut.done():
                        fut.set_result(seqs)
                self.new_data.set()
                self._report_storage()
        finally:
            self._flushing = False

    # --- a full filesystem ---------------------------------------------------------------------

    def _enter_full(self, need: int) -> None:
        """Writer thread, after a write failed for lack of space: free the ballast, shed old telemetry and bulk
        (their pages are reused inside the database), refuse telemetry until space returns."""
        now = time.monotonic()
        if self.storage != "full":
            log.warning("disk full: telemetry refused until space returns", extra={"path": str(self.path.parent)})
            # full again soon after it recovered (space that comes and goes): look less often, so the ballast is
            # not rewritten and the alarm not raised and cleared every few seconds
            self._recheck = min(self._recheck * 2, 300.0) if now - self._recovered_at < 60 else self.recheck_s
            self._bump("disk_full", 1)
        self.storage = "full"
        self._next_check = now + self._recheck
        self.ballast.give_up()
        need = max(need * 4, 256 * 1024)
        conn = self.conn
        with contextlib.suppress(sqlite3.Error):
            conn.execute("BEGIN IMMEDIATE")
            try:
                freed = self._shed_rows(Lane.BULK, need)
                if freed < need:
                    freed += self._shed_readings(need - freed)
                if freed < need:
                    self._shed_rows(Lane.TELEMETRY, need - freed)
                self._save_counters()
                conn.execute("COMMIT")
            except sqlite3.Error:
                _rollback(conn)
                self._load_sizes()  # nothing was shed after all
                raise

    def _maybe_recover(self) -> None:
        """Writer thread: space back (room for the ballast and as much again)? Then take it and accept all."""
        if self.storage != "full" or time.monotonic() < self._next_check:
            return
        self._next_check = time.monotonic() + self._recheck
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            return
        if free >= 2 * max(self.ballast.size, 1024 * 1024) and self.ballast.take():
            log.warning("disk space back: telemetry accepted again", extra={"free_bytes": free})
            self.storage = "ok"
            self._recovered_at = time.monotonic()

    def _write_guarded(self, batch: list[_Pending]) -> list[int | BaseException]:
        """``_write`` that survives a full disk: alarms and events still go in, telemetry and bulk are refused."""
        self._maybe_recover()
        if self.storage == "full":
            return self._write(batch, refuse_low=True)
        try:
            return self._write(batch)
        except (sqlite3.Error, OSError) as exc:
            if not disk_full(exc):
                raise
            self._enter_full(sum(len(p.head) + len(p.tail) for p in batch))
        return self._write(batch, refuse_low=True)

    def _survive_full(self, fn: Any, *args: Any) -> Any:
        """Writer thread: run ``fn``; if the disk is full, free space as for a write and try once more."""
        try:
            return fn(*args)
        except (sqlite3.Error, OSError) as exc:
            if not disk_full(exc):
                raise
            self._enter_full(0)
        return fn(*args)

    def _report_storage(self) -> None:
        """Event loop: raise or clear the storage.full alarm when the state changed (alarms are still written)."""
        if self.storage == self._storage_reported:
            return
        self._storage_reported = self.storage
        if self.storage == "full":
            body: Body = AlarmRaise(
                key="storage",
                code="storage.full",
                severity="major",
                message=f"no space left under {self.path.parent}: telemetry is refused, alarms and events are kept",
                details={"path": str(self.path.parent)},
            )
        else:
            body = AlarmClear(key="storage", code="storage.full", message="space is back")
        fut = self.put(body)
        fut.add_done_callback(lambda f: f.exception())  # a failure is counted by the writer, not raised here

    def _write(self, batch: list[_Pending], refuse_low: bool = False) -> list[int | BaseException]:
        """Writer thread: one transaction for the whole batch, shedding to stay within the budget (with
        ``refuse_low``, the disk is full: telemetry and bulk are refused outright)."""
        conn = self.conn
        incoming = sum(len(p.head) + len(p.tail) + ROW_OVERHEAD + 8 for p in batch)
        results: list[int | BaseException] = []
        rows: list[tuple[int, str, str, int, bytes, int]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            if refuse_low:
                refused = {id(p) for p in batch if p.lane in (Lane.BULK, Lane.TELEMETRY)}
            else:
                refused = self._make_room(incoming, batch)
            if refused:  # a put_many goes in whole or not at all
                partial = {id(p.future) for p in batch if p.many and id(p) in refused}
                refused |= {id(p) for p in batch if p.many and id(p.future) in partial}
            readings = []
            max_seq: dict[int, int] = {}
            for p in batch:
                if id(p) in refused:
                    results.append(
                        OutboxFull(f"no space left under {self.path.parent}: telemetry refused until space returns")
                        if refuse_low
                        else OutboxFull(f"outbox budget {self.budget_bytes} bytes full of alarms/events")
                    )
                    continue
                if p.type == "reading":
                    readings.append((p.head, len(p.head)))
                    results.append(0)
                    continue
                lane_no = _LANE_NO[p.lane]
                seq = self._alloc_seq(p.lane)
                payload = b"%s%d%s" % (p.head, seq, p.tail)
                rows.append((lane_no, p.channel, p.type, seq, payload, len(payload)))
                max_seq[lane_no] = max(max_seq.get(lane_no, 0), seq)
                results.append(seq)
            if rows:
                conn.executemany(
                    "INSERT INTO outbox (lane, channel, type, seq, payload, size) VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
            if readings:
                conn.executemany("INSERT INTO readings (payload, size) VALUES (?, ?)", readings)
            if max_seq:
                conn.executemany(
                    "INSERT INTO lane_seq (lane, next_seq) VALUES (?, ?) "
                    "ON CONFLICT(lane) DO UPDATE SET next_seq = max(next_seq, excluded.next_seq)",
                    [(lane_no, s + 1) for lane_no, s in max_seq.items()],
                )
            if refused:
                self._bump(
                    "refused_telemetry",
                    sum(1 for p in batch if id(p) in refused and p.lane is Lane.TELEMETRY),
                )
                self._bump("refused_bulk", sum(1 for p in batch if id(p) in refused and p.lane is Lane.BULK))
                self._save_counters()
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            for lane_no, _ch, _t, seq, _p, _size in rows:  # give the numbers back: nothing was written
                self._next_seq[_NO_LANE[lane_no]] = min(self._next_seq[_NO_LANE[lane_no]], seq)
            raise
        for lane_no, _ch, _t, _s, payload, _size in rows:
            lane = _NO_LANE[lane_no]
            self._count[lane] += 1
            self._bytes[lane] += len(payload) + ROW_OVERHEAD
        for payload, _size in readings:
            self._readings_pending += 1
            self._bytes[Lane.TELEMETRY] += len(payload) + ROW_OVERHEAD
        self.last_commit_ms = now_ms()
        return results

    def _bump(self, name: str, n: int) -> None:
        if n:
            self.counters[name] = self.counters.get(name, 0) + n

    def _save_counters(self) -> None:
        self.conn.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            list(self.counters.items()),
        )

    @property
    def used_bytes(self) -> int:
        return sum(self._bytes.values())

    def _make_room(self, incoming: int, batch: list[_Pending]) -> set[int]:
        """Shed bulk, then telemetry, oldest first; return ids of pending items to refuse."""
        over = self.used_bytes + incoming - self.budget_bytes
        if over <= 0:
            return set()
        over -= self._shed_rows(Lane.BULK, over)
        if over > 0:
            over -= self._shed_readings(over)
        if over > 0:
            over -= self._shed_rows(Lane.TELEMETRY, over)
        self._save_counters()
        refused: set[int] = set()
        # Still over: refuse the incoming bulk/telemetry (newest first), keep alarms and events.
        for p in reversed(batch):
            if over <= 0:
                break
            if p.lane in (Lane.BULK, Lane.TELEMETRY):
                refused.add(id(p))
                over -= len(p.head) + len(p.tail) + ROW_OVERHEAD
        return refused

    def _shed_rows(self, lane: Lane, need: int) -> int:
        conn = self.conn
        freed = 0
        victims: list[int] = []
        cur = conn.execute("SELECT id, size FROM outbox WHERE lane = ? ORDER BY id", (_LANE_NO[lane],))
        for row_id, size in cur:
            victims.append(row_id)
            freed += size + ROW_OVERHEAD
            if freed >= need:
                break
        cur.close()
        if victims:
            conn.executemany("DELETE FROM outbox WHERE id = ?", [(v,) for v in victims])
            self._count[lane] -= len(victims)
            self._bytes[lane] -= freed
            self._bump(f"shed_{lane.value}", len(victims))
        return freed

    def _shed_readings(self, need: int) -> int:
        conn = self.conn
        freed = 0
        last = None
        n = 0
        for row_id, size in conn.execute("SELECT id, size FROM readings ORDER BY id"):
            last = row_id
            n += 1
            freed += size + ROW_OVERHEAD
            if freed >= need:
                break
        if last is not None:
            conn.execute("DELETE FROM readings WHERE id <= ?", (last,))
            self._readings_pending -= n
            self._bytes[Lane.TELEMETRY] -= freed
            self._bump("shed_readings", n)
        return freed

    # --- the drain side ------------------------------------------------------------------------

    async def fetch(self, limit: int, after: dict[Lane, int], lanes: Iterable[Lane] = LANES) -> list[OutMessage]:
        """Up to ``limit`` committed messages, highest lane first, each lane in order after ``after[lane]``."""
        return await self._run(self._fetch_sync, limit, dict(after), tuple(lanes))  # type: ignore[no-any-return]

    def _fetch_sync(self, limit: int, after: dict[Lane, int], lanes: tuple[Lane, ...]) -> list[OutMessage]:
        out: list[OutMessage] = []
        for lane in lanes:
            if len(out) >= limit:
                break
            if lane is Lane.TELEMETRY and self._readings_pending and not self._has_rows_after(lane, after):
                try:
                    self._survive_full(self._seal_readings)
                except sqlite3.Error as exc:  # still no room: the readings wait, the other lanes go on
                    if not disk_full(exc):
                        raise
            if not self._count[lane]:
                continue
            cur = self.conn.execute(
                "SELECT id, channel, type, seq, payload FROM outbox WHERE lane = ? AND id > ? ORDER BY id LIMIT ?",
                (_LANE_NO[lane], after.get(lane, 0), limit - len(out)),
            )
            out.extend(OutMessage(r, lane, Channel(ch), t, s, p) for r, ch, t, s, p in cur)
        return out

    def _has_rows_after(self, lane: Lane, after: dict[Lane, int]) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM outbox WHERE lane = ? AND id > ? LIMIT 1", (_LANE_NO[lane], after.get(lane, 0))
        ).fetchone()
        return row is not None

    def _seal_readings(self) -> None:
        """Pack pending readings into one telemetry batch message, atomically."""
        conn = self.conn
        rows = conn.execute(
            "SELECT id, payload, size FROM readings ORDER BY id LIMIT ?", (self.batch_readings,)
        ).fetchall()
        if not rows:
            return
        seq = self._alloc_seq(Lane.TELEMETRY)
        readings = [orjson.loads(p) for _i, p, _s in rows]
        TelemetryBatch.model_validate({"readings": readings})  # never seal something the cloud would refuse
        payload = orjson.dumps(
            {
                "v": 1,
                "id": new_id(),
                "dev": self.device,
                "seq": seq,
                "ts": now_ms(),
                "type": "telemetry",
                "body": {"readings": readings},
            }
        )
        lane_no = _LANE_NO[Lane.TELEMETRY]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM readings WHERE id <= ?", (rows[-1][0],))
            conn.execute(
                "INSERT INTO outbox (lane, channel, type, seq, payload, size) VALUES (?, 'tele', 'telemetry', ?, ?, ?)",
                (lane_no, seq, payload, len(payload)),
            )
            conn.execute(
                "INSERT INTO lane_seq (lane, next_seq) VALUES (?, ?) "
                "ON CONFLICT(lane) DO UPDATE SET next_seq = max(next_seq, excluded.next_seq)",
                (lane_no, seq + 1),
            )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        self._readings_pending -= len(rows)
        self._bytes[Lane.TELEMETRY] += len(payload) + ROW_OVERHEAD - sum(s + ROW_OVERHEAD for _i, _p, s in rows)
        self._count[Lane.TELEMETRY] += 1

    def ack(self, row: int) -> None:
        """The broker acknowledged ``row``: delete it (grouped with other acks, off the caller's path)."""
        self._acks.append(row)
        if not self._ack_flushing:
            self._ack_flushing = True
            asyncio.get_running_loop().call_soon(
                lambda: asyncio.get_running_loop().create_task(self._flush_acks(), name="outbox-ack")
            )

    async def _flush_acks(self) -> None:
        try:
            while self._acks:
                batch, self._acks = self._acks, []
                try:
                    await self._run(self._survive_full, self._delete, batch)
                except sqlite3.Error as exc:  # not deleted: sent again after a restart, a duplicate the cloud drops
                    log.warning("acknowledged messages not deleted", extra={"rows": len(batch), "error": str(exc)})
        finally:
            self._ack_flushing = False

    def _delete(self, rows: list[int]) -> None:
        conn = self.conn
        found: list[tuple[int, int]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for i in range(0, len(rows), 900):
                chunk = rows[i : i + 900]
                found.extend(
                    conn.execute(
                        f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(chunk))}) RETURNING lane, size",
                        chunk,
                    ).fetchall()
                )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        for lane_no, size in found:
            lane = _NO_LANE[lane_no]
            self._count[lane] -= 1
            self._bytes[lane] -= size + ROW_OVERHEAD

    async def wait_acks_flushed(self) -> None:
        while self._acks or self._ack_flushing:
            await asyncio.sleep(0.001)

    # --- small state: kv and executed commands -------------------------------------------------

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the writer thread (autocommit); for small state such as command ids."""

        def run() -> list[tuple[Any, ...]]:
            return self.conn.execute(sql, params).fetchall()

        return await self._run(self._survive_full, run)  # type: ignore[no-any-return]

    async def kv_get(self, key: str) -> str | None:
        rows = await self.execute("SELECT value FROM kv WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def kv_set(self, key: str, value: str) -> None:
        await self.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # --- introspection -------------------------------------------------------------------------

    def depth(self) -> dict[str, int]:
        d = {lane.value: self._count[lane] for lane in Lane}
        d["readings"] = self._readings_pending
        return d

    def stats(self) -> dict[str, Any]:
        return {
            "depth": self.depth(),
            "bytes": self.used_bytes,
            "budget_bytes": self.budget_bytes,
            "storage": self.storage,
            "counters": dict(self.counters),
            "last_commit_ms": self.last_commit_ms,
        }

    def shed_counts(self) -> dict[str, int]:
        return {
            "bulk": self.counters.get("shed_bulk", 0),
            "telemetry": self.counters.get("shed_telemetry", 0) + self.counters.get("shed_readings", 0),
        }

    def refused_counts(self) -> dict[str, int]:
        return {
            "bulk": self.counters.get("refused_bulk", 0),
            "telemetry": self.counters.get("refused_telemetry", 0),
        }
