"""The clock: each slot fires once, however many clocks run."""

import datetime as dt
import threading

from freezegun import freeze_time

from nexus import scheduler


class Recorder:
    def __init__(self):
        self.sent = 0
        self.lock = threading.Lock()

    def send(self):
        with self.lock:
            self.sent += 1


def actors():
    return {job.name: Recorder() for job in scheduler.JOBS}


def test_slots_are_aligned():
    sweep, daily = scheduler.JOBS[1], scheduler.JOBS[0]
    at = dt.datetime(2026, 11, 25, 14, 0, 47, tzinfo=dt.UTC)
    assert sweep.slot(at) == dt.datetime(2026, 11, 25, 14, 0, 30, tzinfo=dt.UTC)
    assert daily.slot(at) == dt.datetime(2026, 11, 25, tzinfo=dt.UTC)


def test_two_clocks_fire_each_slot_once(engine):
    a, b = actors(), actors()
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
    total = {name: a[name].sent + b[name].sent for name in a}
    assert total == {"cleanup_old_nexus_queue": 2, "sweep_stuck_rows": 3}


def test_concurrent_clocks_race_for_one_slot(engine):
    clocks = [actors() for _ in range(6)]
    barrier = threading.Barrier(len(clocks))

    def run(acts):
        barrier.wait()
        scheduler.tick(engine, acts, at=dt.datetime(2026, 1, 1, 0, 0, 3, tzinfo=dt.UTC))

    threads = [threading.Thread(target=run, args=(c,)) for c in clocks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(c["sweep_stuck_rows"].sent for c in clocks) == 1
    assert sum(c["cleanup_old_nexus_queue"].sent for c in clocks) == 1


def test_seconds_to_next_slot():
    at = dt.datetime(2026, 11, 25, 14, 0, 47, tzinfo=dt.UTC)
    assert scheduler.seconds_to_next_slot(at=at) == 13
