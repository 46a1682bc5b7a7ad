"""Faults: PostgreSQL restarts, killed backends, a database that is down, stale acks."""

from __future__ import annotations

import threading
import time

import dramatiq
import pytest
from dramatiq.message import Message

from nexus.broker import PostgresBroker
from nexus.broker.sql import q
from nexus.embedded import EmbeddedServer
from nexus.errors import DatabaseUnavailable
from tests.waiting import wait_for

from .conftest import RUNS_TABLE, sql


def message(key: str) -> Message:
    return Message(queue_name="default", actor_name="run", args=(key,), kwargs={}, options={})


def runs(url: str) -> tuple[int, int]:
    """(executions, distinct keys) recorded by the worker processes."""
    [(n, keys)] = sql(url, "SELECT count(*), count(DISTINCT key) FROM broker_test_runs")
    return n, keys


def send_all(broker: PostgresBroker, keys: list[str], sent: list[str], stop: threading.Event):
    """Send ``keys`` one by one like a producer answering 503: retry while the database is
    down (enqueue is idempotent on the message id, so an attempt that did commit unseen is
    harmless)."""
    pause = threading.Event()
    for key in keys:
        m = message(key)
        while not stop.is_set():
            try:
                broker.enqueue(m)
            except DatabaseUnavailable:
                pause.wait(0.05)
                continue
            sent.append(key)
            break


@pytest.mark.fault
@pytest.mark.slow
def test_postgres_restart_under_load_loses_nothing(
    private_server: EmbeddedServer, worker_processes
) -> None:
    # Given two workers and a producer sending 3,000 messages
    url = private_server.url
    sql(url, RUNS_TABLE)
    worker_processes(url, threads=4).wait_ready()
    worker_processes(url, threads=4).wait_ready()
    broker = PostgresBroker(url)
    keys = [f"r{i}" for i in range(3_000)]
    sent: list[str] = []
    stop = threading.Event()
    producer = threading.Thread(target=send_all, args=(broker, keys, sent, stop))
    producer.start()
    try:
        # When PostgreSQL restarts in the middle of it
        wait_for(lambda: runs(url)[0] >= 500, what="500 runs")
        private_server.stop()
        private_server.start()
        producer.join(120)
        assert sent == keys

        # Then every message runs, and exactly once
        wait_for(lambda: runs(url)[1] == len(keys), timeout=90, what="all runs")
        broker.join("default", timeout=30_000)
        assert runs(url) == (len(keys), len(keys))
    finally:
        stop.set()
        producer.join(10)
        broker.close()


@pytest.mark.fault
def test_killed_backends_are_reconnected(runs_db: str, worker_processes) -> None:
    # Given two workers draining 3,000 messages
    worker_processes(runs_db, threads=4).wait_ready()
    worker_processes(runs_db, threads=4).wait_ready()
    broker = PostgresBroker(runs_db)
    try:
        broker.enqueue_many([message(f"t{i}") for i in range(3_000)])

        # When every broker connection of the workers is terminated, again and again
        killed = 0
        pause = threading.Event()
        for _ in range(6):
            rows = sql(
                runs_db,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE 'nexus-broker%%' "
                "AND pid <> pg_backend_pid()",
            )
            killed += len(rows)
            pause.wait(0.3)
        assert killed >= 6

        # Then they reconnect: everything runs exactly once, and a new message is picked up
        # by the re-established LISTEN (well before the 1 s poll would find it)
        wait_for(lambda: runs(runs_db)[1] == 3_000, timeout=90, what="all runs")
        broker.join("default", timeout=30_000)
        assert runs(runs_db) == (3_000, 3_000)
        broker.enqueue(message("after"))
        wait_for(lambda: runs(runs_db)[1] == 3_001, timeout=10, what="the last message")
    finally:
        broker.close()


@pytest.mark.fault
def test_send_with_the_database_down_fails_fast(private_server: EmbeddedServer) -> None:
    broker = PostgresBroker(private_server.url)
    try:
        broker.enqueue(message("before"))
        private_server.stop()

        started = time.perf_counter()
        with pytest.raises(DatabaseUnavailable):
            broker.enqueue(message("during"))
        assert time.perf_counter() - started < 5

        private_server.start()
        broker.enqueue(message("after"))
        assert broker.stats()["ready"] == 2
    finally:
        broker.close()


def test_stale_outcomes_cannot_touch_a_rescheduled_or_reclaimed_message(
    broker: PostgresBroker,
) -> None:
    # Given a message claimed, then retried (rescheduled in place, due now)
    @dramatiq.actor(broker=broker)
    def job(x):
        pass

    job.send(1)
    consumer = broker.consume(job.queue_name, prefetch=2, timeout=1_000)
    first = wait_for(lambda: next(consumer), what="the claim")
    first.retry_in_ms = 0
    consumer.ack(first)
    broker.completions.flush(5)

    # When it is claimed again, and the first claim's ack and nack arrive late
    second = wait_for(lambda: next(consumer), what="the second claim")
    assert (second.message_id, second.attempt, second.options["retries"]) == (
        first.message_id,
        2,
        1,
    )
    stale = type(first)(first._message, attempt=1, consumer=consumer)
    consumer.ack(stale)
    consumer.nack(type(first)(first._message, attempt=1, consumer=consumer))
    broker.completions.flush(5)

    # Then the live claim is untouched, and its own ack deletes it
    assert broker.stats()["claimed"] == 1
    assert broker.stats()["dead_letters"] == 0
    consumer.ack(second)
    broker.completions.flush(5)
    assert broker.stats()["backlog"] == 0
    consumer.close()


def test_reaper_releases_the_claims_of_an_expired_worker(broker: PostgresBroker) -> None:
    # Given messages claimed by a worker whose lease ran out, and one by a live worker
    @dramatiq.actor(broker=broker)
    def job(x):
        pass

    for i in range(3):
        job.send(i)
    sql(
        broker.url,
        "INSERT INTO broker_workers (id, hostname, pid, lease_until) VALUES "
        "('00000000-0000-0000-0000-00000000dead', 'h', 1, clock_timestamp() - interval '1 s'),"
        "('00000000-0000-0000-0000-0000000a11fe', 'h', 2, clock_timestamp() + interval '1 h')",
    )
    sql(
        broker.url,
        "UPDATE broker_messages SET state = 'claimed', claimed_at = clock_timestamp(), "
        "worker_id = CASE WHEN args = '[0]' THEN '00000000-0000-0000-0000-0000000a11fe'::uuid "
        "ELSE '00000000-0000-0000-0000-00000000dead'::uuid END",
    )

    # When the reaper runs
    [(released,)] = sql(broker.url, "SELECT broker_reap(%s)", (1,))

    # Then the expired worker's two messages are ready again and it is forgotten
    assert released == 2
    assert broker.stats()["ready"] == 2 and broker.stats()["claimed"] == 1
    assert sql(broker.url, "SELECT pid FROM broker_workers") == [(2,)]


def test_claim_reads_only_due_rows_whatever_the_history(broker: PostgresBroker) -> None:
    # Given 100,000 delayed messages and 100,000 dead letters
    sql(
        broker.url,
        "INSERT INTO broker_messages (message_id, queue_name, actor_name, due_at) "
        "SELECT gen_random_uuid(), 'default', 'job', clock_timestamp() + interval '1 day' "
        "FROM generate_series(1, 100000)",
    )
    sql(
        broker.url,
        "INSERT INTO broker_dead_letters (message_id, queue_name, actor_name, args, kwargs, "
        "options, message_timestamp, enqueued_at, attempts, retries) "
        "SELECT gen_random_uuid(), 'default', 'job', '[]', '{}', '{}', 0, now(), 1, 0 "
        "FROM generate_series(1, 100000)",
    )
    sql(broker.url, "ANALYZE broker_messages")

    # When the claim query runs: it touches a handful of pages, through the ready index
    plan = sql(
        broker.url,
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
        + str(q("claim"))
        .replace(":queue_name", "'default'")
        .replace(":worker_id", "gen_random_uuid()")
        .replace(":limit", "16")
        .replace(":default_max_retries", "20")
        .replace(":max_retries", "'{}'")
        .replace(":extra_deliveries", "3"),
    )[0][0][0]
    assert "broker_messages_ready_idx" in str(plan)
    assert plan["Plan"]["Shared Hit Blocks"] < 20, plan
