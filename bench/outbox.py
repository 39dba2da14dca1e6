"""``civicedge bench outbox``: committed enqueue rate (one message a call, and a producer's many with
``put_many``), drain rate to a real broker, and the ratio to
publishing the same messages straight to the broker with no outbox, measured side by side in one run."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt

from edge.outbox import Outbox
from protocol.messages import DeviceEvent
from simulators.services import Mosquitto

BATCH_PUT = 100  # messages a producer hands over at once with put_many


async def enqueue_rate(path: Path, n: int, producers: int, durability: str, per_call: int = 1) -> float:
    """Messages per second whose ``put`` returned (so they are committed), with concurrent producers; with
    ``per_call`` > 1 each producer hands over that many at a time (``put_many``)."""
    body = DeviceEvent(code="bench", message="x" * 64, details={"door": "a1"})
    per = n // producers // per_call * per_call
    async with Outbox(path, "bench-01", durability=durability, budget_bytes=2**40) as ob:

        async def producer() -> None:
            if per_call == 1:
                for _ in range(per):
                    await ob.put(body)
                return
            for _ in range(per // per_call):
                await ob.put_many([body] * per_call)

        t = time.perf_counter()
        await asyncio.gather(*(producer() for _ in range(producers)))
        dt = time.perf_counter() - t
        assert ob.depth()["event"] == per * producers
    return per * producers / dt


async def drain_rate(path: Path, broker: Mosquitto, inflight: int) -> tuple[float, list[bytes]]:
    """Publish everything in the outbox (QoS 1, delete on PUBACK) through the agent's uplink."""
    from edge.config import parse_config
    from edge.outbox import LANES
    from edge.uplink import Uplink
    from simulators.fleet import agent_config

    ob = await Outbox(path, "bench-01", budget_bytes=2**40).open()
    payloads = [m.payload for m in await ob.fetch(10**9, dict.fromkeys(LANES, 0))]
    total = ob.depth()["event"]
    cfg = parse_config(
        agent_config(path.parent, device="bench-01", host=broker.host, port=broker.port, mqtt={"inflight": inflight})
    )

    async def ignore(*_a: Any) -> None:
        return None

    uplink = Uplink(cfg, ob, ignore, "bench")
    t = time.perf_counter()
    task = asyncio.create_task(uplink.run())
    while ob.depth()["event"] > 0:
        await asyncio.sleep(0.005)
    dt = time.perf_counter() - t
    uplink.stop()
    await task
    await ob.close()
    return total / dt, payloads


async def direct_rate(payloads: list[bytes], broker: Mosquitto, inflight: int) -> float:
    """The same payloads published straight to the broker, same client library and window, no outbox."""
    window = asyncio.Semaphore(inflight)
    async with aiomqtt.Client(broker.host, broker.port, identifier="bench-direct", max_inflight_messages=inflight) as c:
        c.pending_calls_threshold = inflight + 50

        async def pub(p: bytes) -> None:
            try:
                await c.publish("ce/v1/bench/bench-01/evt", p, qos=1, timeout=60)
            finally:
                window.release()

        t = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for p in payloads:
                await window.acquire()
                tg.create_task(pub(p))
        return len(payloads) / (time.perf_counter() - t)


async def run(
    n: int = 100_000, producers: int = 100, drain_n: int = 20_000, inflight: int = 200, rounds: int = 3
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ce-bench-outbox-"))
    enq, enq_many, enq_crash, drains, directs = [], [], [], [], []
    with Mosquitto(workdir=work / "broker") as broker:
        for r in range(rounds):
            enq.append(await enqueue_rate(work / f"enq-{r}.db", n, producers, "power_loss"))
            enq_many.append(await enqueue_rate(work / f"enqm-{r}.db", n, producers, "power_loss", BATCH_PUT))
            enq_crash.append(await enqueue_rate(work / f"enqc-{r}.db", n, producers, "process_crash"))
            db = work / f"drain-{r}.db"
            await enqueue_rate(db, drain_n, producers, "power_loss")
            d, payloads = await drain_rate(db, broker, inflight)
            drains.append(d)
            directs.append(await direct_rate(payloads, broker, inflight))
    med = statistics.median
    return {
        "bench": "outbox",
        "messages": n,
        "producers": producers,
        "rounds": rounds,
        "enqueue_per_s": round(med(enq)),
        "batch_put_messages": BATCH_PUT,
        "enqueue_batch_per_s": round(med(enq_many)),
        "enqueue_per_s_process_crash_durability": round(med(enq_crash)),
        "drain_messages": drain_n,
        "inflight": inflight,
        "drain_per_s": round(med(drains)),
        "direct_publish_per_s": round(med(directs)),
        "drain_ratio": round(med(d / p for d, p in zip(drains, directs, strict=True)), 3),
        # committed on return either way: one message a call (enqueue_per_s), or a producer's many (put_many)
        "targets": {"enqueue_batch_per_s": 75_000, "drain_ratio": 0.7},
    }
