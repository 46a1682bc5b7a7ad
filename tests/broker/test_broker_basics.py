"""Send, consume, ack, delays and transactional sends, with an in-process Dramatiq worker."""

from __future__ import annotations

import threading

import dramatiq
import pytest
import sqlalchemy as sa
from freezegun import freeze_time

from nexus.broker import PostgresBroker
from tests.waiting import wait_for

from .conftest import sql


def test_send_consume_ack(broker: PostgresBroker, worker: dramatiq.Worker) -> None:
    # Given an actor that records its calls
    seen = []

    @dramatiq.actor(broker=broker)
    def record(x, *, y=0):
        seen.append((x, y))

    # When messages are sent
    for i in range(20):
        record.send(i, y=i * 2)
    broker.join(record.queue_name, timeout=10_000)

    # Then each ran once, and acked messages left the table
    assert sorted(seen) == [(i, i * 2) for i in range(20)]
    assert broker.stats()["backlog"] == 0
    assert sql(broker.url, "SELECT count(*) FROM broker_messages") == [(0,)]


def test_retries_back_off_then_dead_letter(broker: PostgresBroker, worker: dramatiq.Worker) -> None:
    # Given an actor that always fails, and sees its retry count while it runs
    seen = []

    @dramatiq.actor(broker=broker, max_retries=3, min_backoff=50, max_backoff=1_000)
    def doomed(key):
        message = dramatiq.middleware.CurrentMessage.get_current_message()
        seen.append(message.options["retries"])
        raise RuntimeError(f"boom {key}")

    # When it is sent
    message = doomed.send("k1")
    wait_for(lambda: broker.stats()["dead_letters"] == 1, what="the dead letter")

    # Then it ran 1 + 3 times, counting retries, and ended dead with its error
    assert seen == [0, 1, 2, 3]
    [dead] = broker.dead_letters()
    assert (dead.message_id, dead.actor_name, dead.args) == (message.message_id, "doomed", ["k1"])
    assert dead.error == "RuntimeError: boom k1"
    assert "raise RuntimeError" in dead.traceback
    assert (dead.retries, dead.attempts) == (3, 4)
    assert broker.dead_letters(queue_name="elsewhere") == []
    assert broker.stats()["backlog"] == 0


def test_backoff_is_exponential_with_jitter_from_the_database_clock(
    broker: PostgresBroker, worker: dramatiq.Worker
) -> None:
    # Given an actor failing twice with a 200 ms minimum backoff
    @dramatiq.actor(broker=broker, max_retries=2, min_backoff=200, max_backoff=10_000)
    def twice(key):
        message = dramatiq.middleware.CurrentMessage.get_current_message()
        sql(broker.url, "INSERT INTO starts VALUES (%s, clock_timestamp())", (key,))
        if message.options["retries"] < 2:
            raise ValueError("not yet")

    sql(broker.url, "CREATE TABLE starts (key text, at timestamptz)")
    twice.send("a")
    broker.join(twice.queue_name, timeout=10_000)

    # Then the gaps are within [200, 400] ms and then [400, 800] ms (plus scheduling slack)
    rows = sql(broker.url, "SELECT extract(epoch FROM at) * 1000 FROM starts ORDER BY at")
    starts = [float(r[0]) for r in rows]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert len(gaps) == 2
    assert 200 <= gaps[0] <= 400 + 100
    assert 400 <= gaps[1] <= 800 + 100


def test_throws_dead_letters_at_once_and_retry_delay_is_honoured(
    broker: PostgresBroker, worker: dramatiq.Worker
) -> None:
    calls = []

    @dramatiq.actor(broker=broker, throws=(KeyError,), max_retries=5)
    def strict(key):
        calls.append(key)
        raise KeyError(key)

    @dramatiq.actor(broker=broker, max_retries=5)
    def later(key):
        calls.append(key)
        if calls.count(key) == 1:
            raise dramatiq.Retry(delay=10)

    strict.send("s")
    later.send("l")
    broker.join(strict.queue_name, timeout=10_000)

    assert calls.count("s") == 1
    assert calls.count("l") == 2
    [dead] = broker.dead_letters()
    assert dead.args == ["s"] and dead.error == "KeyError: 's'"


def test_delayed_messages_start_on_time(broker: PostgresBroker, worker: dramatiq.Worker) -> None:
    # Given an actor that records how late it starts (its start on the database clock, minus
    # the message's timestamp plus its delay; same machine, same clock)
    sql(broker.url, "CREATE TABLE starts (delay int, late_ms float8)")

    @dramatiq.actor(broker=broker)
    def stamp(delay):
        sent = dramatiq.middleware.CurrentMessage.get_current_message().message_timestamp
        sql(
            broker.url,
            "INSERT INTO starts VALUES (%s, extract(epoch FROM clock_timestamp()) * 1000 - %s)",
            (delay, sent + delay),
        )

    # When messages are sent with delays, in a shuffled order
    delays = [300, 100, 700, 0, 500, 250]
    for d in delays:
        stamp.send_with_options(args=(d,), delay=d)
    broker.join(stamp.queue_name, timeout=10_000)

    # Then each started after its delay, and not much after
    lateness = dict(sql(broker.url, "SELECT delay, late_ms FROM starts"))
    assert set(lateness) == set(delays)
    for d, late in lateness.items():
        assert 0 <= late <= 100, (d, late)


def test_enqueue_on_callers_connection_commits_or_rolls_back_with_it(
    broker: PostgresBroker, worker: dramatiq.Worker, engine: sa.Engine
) -> None:
    seen = []

    @dramatiq.actor(broker=broker)
    def note(x):
        seen.append(x)

    # When one transaction rolls back and another commits
    with engine.connect() as conn:
        with conn.begin() as tx:
            broker.enqueue(note.message("rolled back"), connection=conn)
            tx.rollback()
        with conn.begin():
            broker.enqueue(note.message("committed"), connection=conn)
            pending = sql(broker.url, "SELECT count(*) FROM broker_messages")
    broker.join(note.queue_name, timeout=10_000)

    # Then only the committed message exists, and it was invisible until the commit
    assert pending == [(0,)]
    assert seen == ["committed"]


def test_sql_enqueue_function_wakes_consumers(
    broker: PostgresBroker, worker: dramatiq.Worker
) -> None:
    seen = threading.Event()

    @dramatiq.actor(broker=broker)
    def from_sql(queue_id, version):
        assert (queue_id, version) == ("q-1", 3)
        seen.set()

    [(message_id,)] = sql(
        broker.url,
        "SELECT broker_enqueue('default', 'from_sql', '[\"q-1\", 3]'::jsonb)",
    )
    assert message_id
    assert seen.wait(10)


def test_stats_flush_and_live_message_lookup(broker: PostgresBroker) -> None:
    @dramatiq.actor(broker=broker, queue_name="q1")
    def a(queue_id, version):
        pass

    @dramatiq.actor(broker=broker, queue_name="q2")
    def b(x):
        pass

    a.send("id-1", 1)
    a.send("id-1", 2)
    a.send_with_options(args=("id-2", 1), delay=60_000)
    b.send(1)

    stats = broker.stats()
    assert (stats["ready"], stats["delayed"], stats["claimed"], stats["backlog"]) == (3, 1, 0, 4)
    assert stats["queues"]["q1"]["ready"] == 2 and stats["queues"]["q1"]["delayed"] == 1
    assert stats["dead_letters"] == 0
    assert broker.has_live_message("a", ["id-1", 2])
    assert broker.has_live_message("a", ["id-2"])
    assert not broker.has_live_message("a", ["id-1", 3])
    assert not broker.has_live_message("b", ["id-1"])

    broker.flush("q1")
    assert broker.stats()["backlog"] == 1
    broker.flush_all()
    assert broker.stats()["backlog"] == 0


def test_join_times_out(broker: PostgresBroker) -> None:
    @dramatiq.actor(broker=broker)
    def never(x):
        pass

    never.send(1)
    with pytest.raises(dramatiq.errors.QueueJoinTimeout):
        broker.join(never.queue_name, timeout=100)


def test_a_frozen_python_clock_does_not_stall_delays_or_retries(
    broker: PostgresBroker, worker: dramatiq.Worker
) -> None:
    # Given an actor failing once, with a 100 ms backoff
    calls = []

    @dramatiq.actor(broker=broker, max_retries=1, min_backoff=100, max_backoff=100)
    def flaky(key):
        calls.append(key)
        if len(calls) == 1:
            raise ValueError("first attempt fails")

    # When Python's clock is frozen while a delayed message is sent and retried
    with freeze_time("2001-01-01"):
        flaky.send_with_options(args=("x",), delay=200)
        broker.join(flaky.queue_name, timeout=10_000)

    # Then both deadlines passed anyway: they are kept by the database clock
    assert calls == ["x", "x"]


def test_old_dead_letters_are_forgotten_in_batches(broker: PostgresBroker) -> None:
    # Given 5 dead letters failed 40 days ago and 2 failed just now
    sql(
        broker.url,
        "INSERT INTO broker_dead_letters (message_id, queue_name, actor_name, args, kwargs,"
        " options, message_timestamp, enqueued_at, attempts, retries, failed_at)"
        " SELECT gen_random_uuid(), 'q', 'a', '[]', '{}', '{}', 0, now(), 1, 0,"
        " now() - CAST(g || ' days' AS interval) FROM unnest(ARRAY[40,40,40,40,40,0,0]) g",
    )
    # When letters older than 30 days are forgotten, two at a time
    forgotten = broker.forget_dead_letters(30 * 86_400, batch_size=2)
    # Then only the recent ones are left
    assert forgotten == 5
    assert broker.stats()["dead_letters"] == 2
