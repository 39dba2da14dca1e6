"""``civicedge bench lift``: a hospital morning at a parking tower, through the real lift unit over the tower
simulator's Modbus TCP PLC (tower time runs ``speed`` × faster; the same code paths run).

Morning mix: staff arriving for the day (long stays) and outpatients (1–3 h); outpatients who came earlier leave
and ask for their cars; half of the leaving drivers are recognised at the pay screen 90 s before they ask
(``lift-prefetch``). Both policies run on the same seed, one after the other: ``fifo`` (the baseline: arrival
order, nearest free bay) and ``smart``. Retrieval time = the driver's request → car in the exit bay.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.stats import percentile
from edge.tasks import cancel_and_wait
from protocol.parking import ALL_CLOSED


async def _until(
    ready: Callable[[], bool], unit: Any, unit_task: asyncio.Task[None], what: str, within_s: float = 60.0
) -> None:
    """Wait for the unit to see something (real seconds); a unit that died or a wait that never ends is an error
    naming what was awaited, not a bench that spins for ever."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not ready():
        if unit_task.done():
            exc = None if unit_task.cancelled() else unit_task.exception()
            raise RuntimeError(f"the lift unit stopped while waiting for {what}: {exc!r}") from exc
        if loop.time() > deadline:
            raise TimeoutError(f"{what}: not within {within_s:.0f} s (the unit hears its PLC: {unit.comm_ok})")
        await asyncio.sleep(0.005)


async def _morning(
    policy: str,
    seed: int,
    hours: float,
    speed: float,
    arrivals_h: float,
    departures_h: float,
    prefill: float,
    prefetch_share: float,
    work: Path,
) -> dict[str, Any]:
    from edge.outbox import Outbox
    from edge.units.base import UnitContext
    from edge.units.parking_config import ParkingLiftConfig
    from edge.units.parking_lift import ParkingError, ParkingLiftUnit
    from simulators.parking_tower import Tower

    lifts, floors, bays = 2, 10, 6
    tower = Tower(lifts=lifts, floors=floors, bays=bays, speed=speed, transport="tcp")
    tower.gateway_watchdog_s = 30.0
    cfg = ParkingLiftConfig.model_validate(
        {
            "type": "parking_lift",
            "tower": "bench",
            "plc": {"type": "tcp", "host": tower.host, "port": tower.port},
            "lifts": lifts,
            "floors": floors,
            "bays": bays,
            "policy": policy,
            "poll_s": 0.01,
            "watchdog_s": 5,
            "state": str(work / f"{policy}.db"),
            "clock_scale": speed,
        }
    )
    unit = ParkingLiftUnit(cfg)
    rng = random.Random(seed)
    # the night's cars, in the same bays for both policies; outpatients who leave this morning among them
    parked: list[tuple[str, float]] = []
    spots = [(lf, f, b) for lf in range(lifts) for f in range(floors) for b in range(1, bays + 1)]
    rng.shuffle(spots)
    t0 = unit.now()
    for i, (lf, f, b) in enumerate(spots[: int(prefill * len(spots))]):
        car = f"night-{i}"
        tower.park(lf, f, b, car)
        unit.cars[car] = (lf, f, b)
        leave = t0 + rng.uniform(0, hours * 3600) if rng.random() < 0.5 else t0 + 10 * 3600
        unit.expected[car] = leave + rng.gauss(0, 1200)  # the unit's guess (from the stay class), not the truth
        parked.append((car, leave))
    outbox = await Outbox(work / f"{policy}-outbox.db", "bench").open()
    task = asyncio.create_task(unit.run(UnitContext("bench", outbox, lambda *_: None)))
    await asyncio.wait_for(unit.ready.wait(), 10)
    # the morning's script, in tower seconds from the start
    script: list[tuple[float, str, str]] = []
    t, n = 0.0, 0
    while True:
        t += rng.expovariate(arrivals_h / 3600)
        if t > hours * 3600:
            break
        n += 1
        script.append((t, "arrive", f"car-{n}"))
    leavers = sorted((leave - t0, car) for car, leave in parked if leave - t0 < hours * 3600)
    leavers = leavers[: int(departures_h * hours)]
    for when, car in leavers:
        if rng.random() < prefetch_share:
            script.append((max(0.0, when - 90), "prefetch", car))
        script.append((when, "retrieve", car))
    script.sort()
    # one fault in the hour: a person walks into lift 1's bay area; an operator checks and resets 60 s later
    fault_at, fault_cleared, faults = hours * 1800, False, 0
    fault_open = False
    street: list[list[tuple[str, float]]] = [[] for _ in range(lifts)]
    jobs: list[Any] = []
    refused = 0
    i = 0
    while i < len(script) or any(street) or any(not j.done.done() for j in jobs):
        if task.done():  # the unit died: say why instead of waiting for jobs that cannot finish
            await task
            raise RuntimeError("the lift unit stopped before the morning was over")
        now = unit.now() - t0
        while i < len(script) and script[i][0] <= now:
            _, what, car = script[i]
            i += 1
            try:
                if what == "arrive":
                    stay = rng.uniform(8, 10) * 3600 if rng.random() < 0.35 else rng.uniform(1, 3) * 3600
                    street[unit.choose_entrance()].append((car, stay))
                elif what == "prefetch":
                    await unit._cmd_prefetch({"subject": car, "by": "face"})  # as the pay screen would
                else:
                    jobs.append(await unit.retrieve(car, "ticket"))
            except ParkingError:
                refused += 1
        for lf in range(lifts):
            if (
                street[lf]
                and tower.lifts[lf].vehicle is None
                and not any(j.kind == "store" for j in unit.lifts[lf].queue)
            ):
                car, stay = street[lf].pop(0)
                tower.vehicle_arrives(lf)
                view = unit.lifts[lf]  # awaited here, so the loop variable cannot change under the lambda
                await _until(lambda: view.vehicle is not None, unit, task, f"the car in lift {lf}'s bay")  # noqa: B023
                try:
                    await unit.store(car, lf, "plate", stay)
                except ParkingError:
                    refused += 1
                    tower.vehicle_leaves_entrance(lf)
        if not fault_open and not fault_cleared and now >= fault_at:
            tower.set_interlock(1, "no_person", False)
            fault_open = True
        elif fault_open and now >= fault_at + 60:
            tower.set_interlock(1, "no_person", True)
            fault_open, fault_cleared = False, True
            await _until(lambda: unit.lifts[1].interlocks == ALL_CLOSED, unit, task, "lift 1's interlocks closed")
            await unit._cmd_reset({"lift": 1, "by": "operator"})
            faults += 1
        if unit.now() - t0 > hours * 3600 + 1800:  # half an hour to finish the queue
            break
        await asyncio.sleep(0.005)
    await cancel_and_wait(task)
    await outbox.close()
    tower.close()
    times = [r.duration_s for r in unit.results if r.kind == "retrieve" and r.ok]
    stores = [r for r in unit.results if r.kind == "store"]
    return {
        "retrievals": len(times),
        "stores": len(stores),
        "refused": refused,
        "p50": percentile(times, 50, 1),
        "p99": percentile(times, 99, 1),
        "max": round(max(times), 1) if times else float("nan"),
        "unfinished": sum(not j.done.done() for j in jobs),
        "faults": faults,
    }


def run(
    seed: int = 7,
    hours: float = 1.0,
    speed: float = 40.0,
    arrivals_h: float = 60.0,
    departures_h: float = 40.0,
    prefill: float = 0.6,
    prefetch_share: float = 0.5,
) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="ce-bench-lift-") as tmp:
            args = (seed, hours, speed, arrivals_h, departures_h, prefill, prefetch_share, Path(tmp))
            fifo = await _morning("fifo", *args)
            smart = await _morning("smart", *args)
        return {
            "retrieval_s_p50": smart["p50"],
            "retrieval_s_p99": smart["p99"],
            "retrieval_s_max": smart["max"],
            "fifo_retrieval_s_p50": fifo["p50"],
            "fifo_retrieval_s_p99": fifo["p99"],
            "improvement": round(fifo["p99"] / smart["p99"], 3) if smart["p99"] else None,
            "retrievals": smart["retrievals"],
            "stores": smart["stores"],
            "fifo": fifo,
            "smart": smart,
            "faults_handled": fifo["faults"] + smart["faults"],
            "speed": speed,
        }

    return asyncio.run(main())
