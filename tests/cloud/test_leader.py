"""One leader among the cloud's processes (a PostgreSQL advisory lock): exactly one of several leads, and when
it goes another takes over; on SQLite the one process leads."""

from __future__ import annotations

import time

from cloud.leader import Leadership
from cloud.metrics import Metrics
from tests.waits import wait


def test_on_sqlite_the_one_process_leads() -> None:
    m = Metrics()
    solo = Leadership(None, m)
    solo.start()  # nothing to compete for: no thread, no connection
    assert solo.is_leader() and not solo.shared and m.get("ce_leader") == 1
    solo.stop()


def test_one_of_several_leads_and_another_takes_over_when_it_goes(postgres_url: str) -> None:
    nodes = [Leadership(postgres_url, Metrics(), every_s=0.05) for _ in range(3)]
    for n in nodes:
        n.start()
    try:
        (first,) = wait(lambda: [n for n in nodes if n.is_leader()], 10, "a leader")
        time.sleep(0.3)  # (six more rounds of trying: nobody else may lead meanwhile)
        assert [n for n in nodes if n.is_leader()] == [first]
        assert first.metrics.get("ce_leader") == 1 and first.report()["since"] is not None
        first.stop()  # its session ends: the lock is free
        t0 = time.monotonic()
        (second,) = wait(lambda: [n for n in nodes if n.is_leader()], 10, "a new leader")
        assert second is not first and time.monotonic() - t0 < 5
        assert not first.is_leader() and first.metrics.get("ce_leader") == 0
    finally:
        for n in nodes:
            n.stop()


def test_a_process_that_may_not_lead_never_does(postgres_url: str) -> None:
    worker = Leadership(postgres_url, Metrics(), every_s=0.05, compete=False)
    worker.start()  # no thread, no connection: nothing to take
    assert not worker.is_leader() and Leadership(None, Metrics(), compete=False).is_leader() is False
    worker.stop()
