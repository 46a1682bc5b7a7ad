"""Delivery through real ``dramatiq`` worker subprocesses: exactly once under load, retries to
dead letters, a SIGKILLed worker's messages redelivered within the lease."""

from __future__ import annotations

import pytest
from dramatiq.message import Message

from nexus.broker import HEARTBEAT_MS, LEASE_MS, PostgresBroker
from tests.waiting import wait_for

from .conftest import sql


def message(actor: str, *args) -> Message:
    return Message(queue_name="default", actor_name=actor, args=args, kwargs={}, options={})


def done_count(url: str) -> int:
    return sql(url, "SELECT count(*) FROM broker_test_runs WHERE event = 'done'")[0][0]


def test_worker_process_runs_messages_and_dead_letters_failures(
    runs_db: str, worker_processes
) -> None:
    # Given one worker process
    wp = worker_processes(runs_db, threads=2)
    wp.wait_ready()
    broker = PostgresBroker(runs_db)
    try:
        # When one good and one failing message are sent
        broker.enqueue(message("run", "good"))
        broker.enqueue(message("fail", "bad"))
        wait_for(lambda: broker.stats()["dead_letters"] == 1, what="the dead letter")
        wait_for(lambda: done_count(runs_db) == 1, what="the good message")

        # Then the good one ran once; the bad one 1 + 2 retries, then was dead-lettered
        attempts = sql(
            runs_db, "SELECT retries FROM broker_test_runs WHERE key = 'bad' ORDER BY at"
        )
        assert [r for (r,) in attempts] == [0, 1, 2]
        [dead] = broker.dead_letters()
        assert dead.error == "RuntimeError: failing on purpose: bad"
        assert broker.stats()["backlog"] == 0
    finally:
        broker.close()


@pytest.mark.slow
def test_two_workers_run_ten_thousand_messages_exactly_once(runs_db: str, worker_processes) -> None:
    # Given 10,000 queued messages
    broker = PostgresBroker(runs_db)
    try:
        broker.enqueue_many([message("run", f"m{i}") for i in range(10_000)])
        # When two worker processes drain them
        a = worker_processes(runs_db, threads=8)
        b = worker_processes(runs_db, threads=8)
        wait_for(lambda: done_count(runs_db) >= 10_000, timeout=120, what="10,000 runs")
        broker.join("default", timeout=30_000)
    finally:
        broker.close()

    # Then every message ran exactly once, and both workers took a share
    [(runs, keys)] = sql(runs_db, "SELECT count(*), count(DISTINCT key) FROM broker_test_runs")
    assert (runs, keys) == (10_000, 10_000)
    shares = sql(runs_db, "SELECT pid, count(*) FROM broker_test_runs GROUP BY pid")
    assert len(shares) == 2, shares
    assert a.stop() == 0 and b.stop() == 0


@pytest.mark.fault
def test_sigkilled_workers_messages_are_redelivered_within_the_lease(
    runs_db: str, worker_processes
) -> None:
    # Given worker A (1 thread, so 2 prefetched) running a slow job with another claimed behind
    a = worker_processes(runs_db, threads=1)
    a_pid = a.wait_ready()
    broker = PostgresBroker(runs_db)
    try:
        broker.enqueue(message("slow", "s1", 60))
        wait_for(
            lambda: sql(runs_db, "SELECT count(*) FROM broker_test_runs WHERE key = 's1'")[0][0],
            what="s1 to start",
        )
        broker.enqueue(message("run", "queued"))
        wait_for(lambda: broker.stats()["claimed"] == 2, what="the second message prefetched")

        # When A is SIGKILLed and worker B is running
        b = worker_processes(runs_db, threads=2)
        b_pid = b.wait_ready()
        [(killed_at,)] = sql(runs_db, "SELECT clock_timestamp()")
        a.kill_worker()

        # Then B completes both, within the lease bound of the kill
        bound = (LEASE_MS + 2 * HEARTBEAT_MS) / 1000
        wait_for(lambda: done_count(runs_db) == 2, timeout=bound + 10, what="redelivery")
        rows = sql(
            runs_db,
            "SELECT key, pid, extract(epoch FROM at - %s) FROM broker_test_runs "
            "WHERE event = 'done'",
            (killed_at,),
        )
        assert {(key, pid) for key, pid, _ in rows} == {("s1", b_pid), ("queued", b_pid)}
        assert all(float(s) <= bound for _, _, s in rows), rows
        assert a_pid != b_pid
        broker.join("default", timeout=10_000)
    finally:
        broker.close()


def test_live_slow_job_is_not_stolen(runs_db: str, worker_processes) -> None:
    # Given a job that takes longer than the lease, with another worker waiting
    a = worker_processes(runs_db, threads=1)
    a_pid = a.wait_ready()
    broker = PostgresBroker(runs_db)
    try:
        broker.enqueue(message("slow", "long", (LEASE_MS + 3 * HEARTBEAT_MS) / 1000))
        wait_for(lambda: done_count(runs_db) == 0 and broker.stats()["claimed"] == 1)
        worker_processes(runs_db, threads=1).wait_ready()

        # Then it completes once, on its own worker, never started twice
        wait_for(lambda: done_count(runs_db) == 1, timeout=30, what="the slow job")
        rows = sql(runs_db, "SELECT event, pid FROM broker_test_runs ORDER BY at")
        assert rows == [("start", a_pid), ("done", a_pid)]
    finally:
        broker.close()


def test_shutdown_requeues_prefetched_messages(runs_db: str, worker_processes) -> None:
    # Given a worker holding a running slow job and a prefetched one
    a = worker_processes(runs_db, threads=1)
    a.wait_ready()
    broker = PostgresBroker(runs_db)
    try:
        broker.enqueue(message("slow", "first", 1))
        wait_for(lambda: sql(runs_db, "SELECT count(*) FROM broker_test_runs")[0][0] == 1)
        broker.enqueue(message("run", "second"))
        wait_for(lambda: broker.stats()["claimed"] == 2, what="the prefetch")

        # When it is stopped (SIGTERM): the running job finishes, the other is given back
        assert a.stop() == 0
        stats = broker.stats()
        assert (stats["ready"], stats["claimed"]) == (1, 0)
        assert sql(runs_db, "SELECT count(*) FROM broker_workers") == [(0,)]
        assert done_count(runs_db) == 1
    finally:
        broker.close()
