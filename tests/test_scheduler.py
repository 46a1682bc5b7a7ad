"""The clock: each slot fires once, however many clocks run; a failed send frees the slot."""

import datetime as dt
import threading

import dramatiq
import pytest
from freezegun import freeze_time

from nexus import scheduler
from nexus.broker import PostgresBroker
from nexus.errors import DatabaseUnavailable


class Clock:
    """A clock's send: counts what it enqueued (in the slot's transaction)."""

    def __init__(self, fail: int = 0):
        self.sent: dict[str, int] = {}
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, name, conn):
        if self.fail:
            self.fail -= 1
            raise DatabaseUnavailable("broker down")
        with self.lock:
            self.sent[name] = self.sent.get(name, 0) + 1


def test_slots_are_aligned():
    daily, sweep = scheduler.JOBS
    at = dt.datetime(2026, 11, 25, 14, 0, 47, tzinfo=dt.UTC)
    assert sweep.slot(at) == dt.datetime(2026, 11, 25, 14, 0, 30, tzinfo=dt.UTC)
    assert daily.slot(at) == dt.datetime(2026, 11, 25, tzinfo=dt.UTC)


def test_two_clocks_fire_each_slot_once(engine):
    a, b = Clock(), Clock()
    with freeze_time("2026-11-25 14:00:01"):
        fired_a = scheduler.tick(engine, a)
        fired_b = scheduler.tick(engine, b)
    assert sorted(fired_a) == ["cleanup_old_nexus_queue", "sweep_stuck_rows"] and fired_b == []
    with freeze_time("2026-11-25 14:00:29"):
        assert scheduler.tick(engine, b) == []
    with freeze_time("2026-11-25 14:00:31"):
        assert scheduler.tick(engine, b) == ["sweep_stuck_rows"]
        assert scheduler.tick(engine, a) == []
    with freeze_time("2026-11-26 00:00:05"):
        assert sorted(scheduler.tick(engine, a)) == ["cleanup_old_nexus_queue", "sweep_stuck_rows"]
    total = {name: a.sent.get(name, 0) + b.sent.get(name, 0) for name in a.sent}
    assert total == {"cleanup_old_nexus_queue": 2, "sweep_stuck_rows": 3}


def test_concurrent_clocks_race_for_one_slot(engine):
    clocks = [Clock() for _ in range(6)]
    barrier = threading.Barrier(len(clocks))

    def run(clock):
        barrier.wait()
        scheduler.tick(engine, clock, at=dt.datetime(2026, 1, 1, 0, 0, 3, tzinfo=dt.UTC))

    threads = [threading.Thread(target=run, args=(c,)) for c in clocks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(c.sent.get("sweep_stuck_rows", 0) for c in clocks) == 1
    assert sum(c.sent.get("cleanup_old_nexus_queue", 0) for c in clocks) == 1


def test_a_failed_send_leaves_the_slot_for_the_next_tick(engine):
    at = dt.datetime(2026, 11, 25, 9, 0, 1, tzinfo=dt.UTC)
    flaky = Clock(fail=1)
    with pytest.raises(DatabaseUnavailable):
        scheduler.tick(engine, flaky, at=at)
    assert flaky.sent == {}
    assert sorted(scheduler.tick(engine, flaky, at=at)) == [
        "cleanup_old_nexus_queue",
        "sweep_stuck_rows",
    ]


def test_the_clock_enqueues_real_messages_with_its_slot(engine, db_url):
    broker = PostgresBroker(engine=engine)

    def send(name, conn):
        message = dramatiq.Message(
            queue_name="nexus-periodic", actor_name=name, args=(), kwargs={}, options={}
        )
        broker.enqueue(message, connection=conn)

    fired = scheduler.tick(engine, send, at=dt.datetime(2026, 3, 1, 0, 0, 1, tzinfo=dt.UTC))
    assert sorted(fired) == ["cleanup_old_nexus_queue", "sweep_stuck_rows"]
    stats = broker.stats()
    assert stats["queues"]["nexus-periodic"]["ready"] == 2


def test_seconds_to_next_slot():
    at = dt.datetime(2026, 11, 25, 14, 0, 47, tzinfo=dt.UTC)
    assert scheduler.seconds_to_next_slot(at=at) == 13
