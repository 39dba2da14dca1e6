"""Outbox behaviour on a real SQLite file: commit, order, priority, batching, budget, persistence."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from edge.outbox import Outbox, OutboxFull
from protocol import decode
from protocol.messages import AlarmRaise, DeviceEvent, Lane, MediaSnapshot


def ev(i: int) -> DeviceEvent:
    return DeviceEvent(code="tick", details={"n": i})


def alarm(i: int) -> AlarmRaise:
    return AlarmRaise(key=f"k{i}", code="gas", severity="critical", message="gas high")


def snap(i: int, size: int = 2000) -> MediaSnapshot:
    # a JPEG's first bytes, then filler: ``size`` characters of base64 (rounded up to a whole group)
    return MediaSnapshot(
        ref=f"s{i}",
        content_type="image/jpeg",
        data_b64="/9j/" + "A" * (-(-size // 4) * 4 - 4),
        purpose="visitor_request",
    )


async def test_put_commits_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ob.db"
    async with Outbox(path, "gate-01") as ob:
        seqs = await asyncio.gather(*(ob.put(ev(i)) for i in range(100)))
        assert sorted(seqs) == list(range(1, 101))
    async with Outbox(path, "gate-01") as ob:
        assert ob.depth()["event"] == 100
        msgs = await ob.fetch(1000, {})
        assert [decode(m.payload).body.details["n"] for m in msgs] == list(range(100))  # type: ignore[attr-defined]
        assert [m.seq for m in msgs] == list(range(1, 101))
        # seq continues after a restart, never reused
        assert await ob.put(ev(100)) == 101


async def test_lane_priority_and_order(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "ob.db", "d") as ob:
        for i in range(5):
            await ob.put(ev(i))
            await ob.put(snap(i, 10))
            await ob.put(alarm(i))
        msgs = await ob.fetch(100, {})
        assert [m.lane for m in msgs] == [Lane.ALARM] * 5 + [Lane.EVENT] * 5 + [Lane.BULK] * 5
        for lane in (Lane.ALARM, Lane.EVENT, Lane.BULK):
            seqs = [m.seq for m in msgs if m.lane is lane]
            assert seqs == sorted(seqs)
        # a cursor continues after the last fetched row of each lane
        after = {Lane.ALARM: msgs[4].row}
        nxt = await ob.fetch(3, after)
        assert [m.lane for m in nxt] == [Lane.EVENT] * 3


async def test_ack_deletes(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "ob.db", "d") as ob:
        await asyncio.gather(*(ob.put(ev(i)) for i in range(10)))
        msgs = await ob.fetch(100, {})
        for m in msgs[:7]:
            ob.ack(m.row)
        await ob.wait_acks_flushed()
        assert ob.depth()["event"] == 3
        rest = await ob.fetch(100, {})
        assert [m.row for m in rest] == [m.row for m in msgs[7:]]


async def test_readings_are_sealed_into_batches(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "ob.db", "d", batch_readings=100) as ob:
        await asyncio.gather(*(ob.put_reading("temp", 20 + i / 10, ts=1000 + i) for i in range(250)))
        assert ob.depth()["readings"] == 250
        first = await ob.fetch(10, {})
        assert len(first) == 1 and first[0].type == "telemetry"
        env = decode(first[0].payload, "ce/v1/s/d/tele")
        assert len(env.body.readings) == 100  # type: ignore[attr-defined]
        # the sealed batch keeps its id: fetching again (a resend) yields the same message
        again = await ob.fetch(10, {})
        assert again[0].payload == first[0].payload
        after = {Lane.TELEMETRY: first[0].row}
        second = await ob.fetch(10, after)
        assert len(decode(second[0].payload).body.readings) == 100  # type: ignore[attr-defined]
        third = await ob.fetch(10, {Lane.TELEMETRY: second[0].row})
        assert [r["ts"] for r in decode(third[0].payload).body.readings] == list(range(1200, 1250))  # type: ignore[attr-defined]
        assert ob.depth()["readings"] == 0


async def test_budget_sheds_bulk_then_telemetry_never_alarms(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "ob.db", "d", budget_bytes=64 * 1024) as ob:
        for i in range(10):
            await ob.put(snap(i, 2000))
        for i in range(200):
            await ob.put_reading("level", float(i))
        before = ob.used_bytes
        # alarms and events keep coming: bulk goes first, then telemetry
        for i in range(150):
            await ob.put(alarm(i))
            await ob.put(ev(i))
        depth = ob.depth()
        assert depth["alarm"] == 150 and depth["event"] == 150
        assert depth["bulk"] == 0
        assert ob.shed_counts()["bulk"] == 10
        assert ob.shed_counts()["telemetry"] > 0
        assert depth["readings"] == 200 - ob.counters["shed_readings"]
        assert before <= ob.budget_bytes
        # once only alarms/events remain, new telemetry is refused (and counted), alarms still accepted
        for i in range(300):
            await ob.put(alarm(1000 + i))
        with pytest.raises(OutboxFull):
            await ob.put_reading("level", 1.0)
        with pytest.raises(OutboxFull):
            await ob.put(snap(99))
        assert ob.refused_counts() == {"bulk": 1, "telemetry": 1}
        assert ob.depth()["alarm"] == 450
    # counters persist across a restart (they go into the health heartbeat)
    async with Outbox(tmp_path / "ob.db", "d", budget_bytes=64 * 1024) as ob:
        assert ob.refused_counts() == {"bulk": 1, "telemetry": 1}
        assert ob.shed_counts()["bulk"] == 10


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from edge.outbox import Outbox
    from protocol.messages import DeviceEvent

    async def main():
        ob = await Outbox(sys.argv[1], "d").open()
        n = 0
        while True:
            await asyncio.gather(*(ob.put(DeviceEvent(code="tick")) for _ in range(50)))
            n += 50
            print(n, flush=True)  # reported only after the commit returned

    asyncio.run(main())
    """
)


def test_kill_9_loses_nothing_that_was_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "ob.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    reported = 0
    for line in proc.stdout:
        reported = int(line)
        if reported >= 2000:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    async def count() -> int:
        async with Outbox(path, "d") as ob:
            msgs = await ob.fetch(100_000, {})
            seqs = [m.seq for m in msgs]
            assert seqs == list(range(1, len(seqs) + 1))  # no holes, no reuse
            return len(msgs)

    assert asyncio.run(count()) >= reported


async def test_payloads_are_valid_envelopes(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "ob.db", "gate-01") as ob:
        await ob.put(alarm(1))
        (m,) = await ob.fetch(1, {})
        env = decode(m.payload, f"ce/v1/s/gate-01/{m.channel.value}")
        assert env.dev == "gate-01" and env.seq == 1 and orjson.loads(m.payload)["type"] == "alarm.raise"


async def test_cursor_stays_valid_when_the_table_empties_and_refills(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "ob.db", "d") as ob:
        await asyncio.gather(*(ob.put(ev(i)) for i in range(5)))
        first = await ob.fetch(10, {})
        for m in first:
            ob.ack(m.row)
        await ob.wait_acks_flushed()
        await asyncio.gather(*(ob.put(ev(i)) for i in range(5, 8)))
        nxt = await ob.fetch(10, {Lane.EVENT: first[-1].row})  # row ids are never reused
        assert [decode(m.payload).body.details["n"] for m in nxt] == [5, 6, 7]  # type: ignore[attr-defined]


async def test_put_many_commits_in_order_in_one_call(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "ob.db", "d") as ob:
        first = await ob.put(ev(-1))
        seqs = await ob.put_many([ev(i) for i in range(500)])
        assert seqs == list(range(first + 1, first + 501))
        assert await ob.put_many([]) == []
        msgs = await ob.fetch(1000, {})
        assert [decode(m.payload).body.details["n"] for m in msgs] == list(range(-1, 500))  # type: ignore[attr-defined]
        # a put_many beside single puts in the same transaction: each gets its own seqs
        both = await asyncio.gather(ob.put(ev(900)), ob.put_many([ev(901), ev(902)]), ob.put(ev(903)))
        assert both == [first + 501, [first + 502, first + 503], first + 504]


async def test_put_many_goes_in_whole_or_not_at_all(tmp_path: Path) -> None:
    """With the budget full of alarms, a put_many of snapshots is refused whole (the caller is never told
    "refused" about messages that are in fact queued), alarms still go in, and lanes are never mixed."""
    async with Outbox(tmp_path / "ob.db", "d", budget_bytes=32 * 1024) as ob:
        for i in range(300):
            await ob.put(alarm(i))
        depth = ob.depth()["alarm"]
        with pytest.raises(OutboxFull):
            await ob.put_many([snap(1), snap(2)])
        assert ob.depth()["bulk"] == 0
        assert await ob.put_many([alarm(1001), alarm(1002)])  # alarms still go in
        assert ob.depth()["alarm"] == depth + 2
        # one lane a call: a refused snapshot can never take an alarm down with it
        with pytest.raises(ValueError, match="one lane"):
            ob.put_many([alarm(1003), snap(3)])
        assert ob.depth()["alarm"] == depth + 2
