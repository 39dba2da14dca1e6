"""A really full filesystem under the agent (a size-limited tmpfs, filled by "something else" as an SD card is
filled by logs or images), not a configured budget: alarms still written, telemetry refused and counted, a
storage.full alarm raised and cleared, everything back once space returns."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.agent import _atomic_write
from edge.outbox import Outbox, OutboxFull, disk_full
from protocol.messages import AlarmRaise, Lane


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "card"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> int:
    """Write a file until the filesystem says ENOSPC; bytes written."""
    n = 0
    with open(path, "wb", buffering=0) as f:
        chunk = b"x" * 65536
        while True:
            try:
                n += f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        with contextlib.suppress(OSError):
            while True:
                n += f.write(b"x" * 512)
    return n


def _alarm(i: int) -> AlarmRaise:
    return AlarmRaise(key=f"door-{i}", code="door.forced", severity="critical", message=f"forced open #{i}")


async def test_a_full_card_keeps_alarms_refuses_telemetry_and_recovers(small_disk: Path) -> None:
    ob = Outbox(small_disk / "outbox.db", "gate-07", reserve_bytes=1024 * 1024, recheck_s=0.0)
    await ob.open()
    try:
        assert ob.reserve_path.stat().st_size == 1024 * 1024  # ballast taken while there was room
        await asyncio.gather(*(ob.put_reading("temp", 20.0 + i) for i in range(200)))
        filler = small_disk / "journal.bin"
        fill(filler)  # another program fills the card to the last block

        # telemetry is refused (not lost silently: counted), alarms are committed
        readings = await asyncio.gather(*(ob.put_reading("temp", 1.0) for _ in range(300)), return_exceptions=True)
        alarms = await asyncio.gather(*(ob.put(_alarm(i)) for i in range(50)), return_exceptions=True)
        assert [a for a in alarms if isinstance(a, BaseException)] == []
        refused = [r for r in readings if isinstance(r, OutboxFull)]
        assert refused and "no space left" in str(refused[0])
        assert ob.storage == "full" and ob.counters["disk_full"] == 1
        assert ob.refused_counts()["telemetry"] >= len(refused)
        assert not ob.reserve_path.exists()  # the ballast was given up for the alarms
        await asyncio.sleep(0)  # (one turn of the loop: the storage alarm is put after the batch that saw it)
        while ob._pending or ob._flushing:
            await asyncio.sleep(0.01)
        msgs = await ob.fetch(1000, {})
        alarm_types = [(m.type, m.payload) for m in msgs if m.lane is Lane.ALARM]
        assert sum(t == "alarm.raise" for t, _p in alarm_types) == 51  # 50 doors + storage.full
        assert any(b'"code":"storage.full"' in p for _t, p in alarm_types)
        assert ob.stats()["storage"] == "full"

        # space comes back: the next write notices, takes the ballast again, accepts telemetry, clears the alarm
        filler.unlink()
        await ob.put_reading("temp", 2.0)
        assert ob.storage == "ok" and ob.reserve_path.stat().st_size == 1024 * 1024
        while ob._pending or ob._flushing:
            await asyncio.sleep(0.01)
        msgs = await ob.fetch(1000, {})
        assert any(m.type == "alarm.clear" and b"storage.full" in m.payload for m in msgs)
    finally:
        await ob.close()
    # nothing accepted was lost: reopened from the card, every alarm is still there
    again = await Outbox(small_disk / "outbox.db", "gate-07").open()
    try:
        assert again.depth()[Lane.ALARM.value] == 52  # 50 doors, storage.full raised and cleared
    finally:
        await again.close()


async def test_a_card_filled_while_the_agent_was_stopped(small_disk: Path) -> None:
    """The card filled while the agent was stopped (SQLite cannot even open its WAL index): the ballast left by
    the last run is given up to open, the outbox says it is full from the start, refuses telemetry with a clear
    reason, still takes alarms, and is whole again once space is back."""
    db = small_disk / "outbox.db"
    first = await Outbox(db, "gate-07", reserve_bytes=1024 * 1024).open()
    await first.put(_alarm(0))
    await first.close()
    filler = small_disk / "images.bin"
    fill(filler)
    ob = Outbox(db, "gate-07", reserve_bytes=1024 * 1024, recheck_s=0.0)
    await ob.open()
    try:
        assert ob.storage == "full" and ob.depth()[Lane.ALARM.value] == 1
        with pytest.raises(OutboxFull, match="no space left"):
            await ob.put_reading("temp", 1.0)
        assert await ob.put(_alarm(1)) > 0
        filler.unlink()
        assert await ob.put_reading("temp", 2.0) == 0
        assert ob.storage == "ok" and ob.reserve_path.exists()
    finally:
        await ob.close()
    again = await Outbox(db, "gate-07").open()
    try:  # both doors, and the storage alarm raised and cleared
        assert again.depth()[Lane.ALARM.value] == 4 and again.depth()["readings"] == 1
    finally:
        await again.close()


def test_other_files_on_a_full_card_fail_with_a_clear_error(small_disk: Path) -> None:
    config = small_disk / "config.yaml"
    config.write_text("old: 1\n")
    fill(small_disk / "filler.bin")
    with pytest.raises(OSError) as err:
        _atomic_write(config, "new: 2\n" * 100_000)
    assert disk_full(err.value)
    assert config.read_text() == "old: 1\n"  # the running config is intact
    assert [p.name for p in small_disk.iterdir() if p.name.startswith(".config")] == []  # no half-written file
    assert os.statvfs(small_disk).f_bavail == 0


def test_an_update_on_a_full_card_leaves_nothing_half_installed(small_disk: Path) -> None:
    from edge.config import UpdatesConfig
    from edge.updater import Updater

    (small_disk / "versions").mkdir()
    up = Updater(UpdatesConfig(root=small_disk), "0.1.0", trust=None, outbox=None)  # type: ignore[arg-type]
    fill(small_disk / "filler.bin")
    with pytest.raises(OSError) as err:
        up._install("0.2.0", {"edge/agent.py": b"x" * 200_000})
    assert disk_full(err.value)
    assert list((small_disk / "versions").iterdir()) == []  # the running version is all there is
