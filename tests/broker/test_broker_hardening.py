"""Failure handling: idempotent enqueue, poison messages, outcomes that cannot be written,
dead broker threads, lease loss, the delivery cap and SIGTERM (SPEC section 9)."""

from __future__ import annotations

import os
import signal
import threading
import uuid

import dramatiq
import pytest
import sqlalchemy as sa
from dramatiq.message import Message

from nexus import errors
from nexus.broker import PostgresBroker
from nexus.broker.completions import ACK, RETRY, Completion, clean_text
from nexus.broker.lease import Lease, monotonic
from nexus.broker.watchdog import EXIT_THREAD_DIED
from nexus.db import translate_errors
from tests.waiting import wait_for

from .conftest import sql


def message(actor: str, *args, message_id: str | None = None) -> Message:
    extra = {} if message_id is None else {"message_id": message_id}
    return Message(
        queue_name="default", actor_name=actor, args=args, kwargs={}, options={}, **extra
    )


def events(url: str, key: str) -> list[tuple[str, int]]:
    return sql(url, "SELECT event, pid FROM broker_test_runs WHERE key = %s ORDER BY id", (key,))


# -- enqueue ------------------------------------------------------------------------------


def test_enqueue_is_idempotent_on_the_message_id(broker: PostgresBroker) -> None:
    # Given a message stored once, and a dead letter
    first = message("job", 1)
    broker.enqueue(first)
    dead_id = str(uuid.uuid4())
    sql(
        broker.url,
        "INSERT INTO broker_dead_letters (message_id, queue_name, actor_name, args, kwargs, "
        "options, message_timestamp, enqueued_at, attempts, retries) "
        "VALUES (%s, 'default', 'job', '[]', '{}', '{}', 0, now(), 1, 0)",
        (dead_id,),
    )

    # When the same ids are sent again, alone, in a batch, and twice within a batch
    broker.enqueue(first)
    broker.enqueue(message("job", 2, message_id=dead_id))
    second = message("job", 3)
    broker.enqueue_many([second, second, first, message("job", 4, message_id=dead_id)])

    # Then each id is stored once; the first payload stands; the dead letter stays dead
    rows = sql(broker.url, "SELECT message_id::text, args FROM broker_messages ORDER BY args")
    assert rows == [(first.message_id, [1]), (second.message_id, [3])]
    assert broker.stats()["dead_letters"] == 1


def test_a_violated_constraint_is_an_integrity_error(broker: PostgresBroker) -> None:
    insert = sa.text(
        "INSERT INTO broker_workers (id, hostname, pid, lease_until) "
        "VALUES ('00000000-0000-0000-0000-000000000001', 'h', 1, now())"
    )
    with translate_errors(), broker.engine.begin() as conn:
        conn.execute(insert)
    with pytest.raises(errors.IntegrityError) as info, translate_errors():
        with broker.engine.begin() as conn:
            conn.execute(insert)
    assert isinstance(info.value, errors.DatabaseError)
    assert "duplicate key" in str(info.value)


# -- poison and unwritable outcomes ------------------------------------------------------


def test_poison_messages_go_alone_to_the_dead_letters(
    broker: PostgresBroker, worker: dramatiq.Worker
) -> None:
    # Given an actor, and rows written from SQL that no worker can run, among good ones
    seen = []

    @dramatiq.actor(broker=broker, queue_name="default")
    def job(x):
        seen.append(x)

    sql(
        broker.url,
        "SELECT broker_enqueue('default', 'nobody', '[1]'),"
        " broker_enqueue('default', 'job', '[2]', '{}', '[]'),"
        " broker_enqueue('default', 'job', '[3]', '[1]'),"
        " broker_enqueue('default', 'job', '[4]', '{}', '{\"max_retries\": \"x\"}'),"
        " broker_enqueue('default', 'job', '[5]', '{}', '{\"eta\": 1}'),"
        " broker_enqueue('default', 'job', '[6]')",
    )

    # When the worker claims them
    wait_for(lambda: broker.stats()["backlog"] == 0, what="the queue to drain")

    # Then each poison row is dead-lettered with its reason, and the others ran
    assert sorted(seen) == [5, 6]
    reasons = {tuple(d.args): d.error for d in broker.dead_letters()}
    assert reasons == {
        (1,): "unknown actor 'nobody'",
        (2,): "options is not a JSON object",
        (3,): "kwargs is not a JSON object",
        (4,): "option 'max_retries' is not a number",
    }


def test_an_outcome_that_cannot_be_written_is_split_out_and_dead_lettered(
    broker: PostgresBroker,
) -> None:
    # Given three claimed messages
    @dramatiq.actor(broker=broker)
    def job(x):
        pass

    for i in range(3):
        job.send(i)
    consumer = broker.consume(job.queue_name, prefetch=3, timeout=1_000)
    claimed = [wait_for(lambda: next(consumer), what=f"claim {i}") for i in range(3)]

    # When their outcomes are written in one batch, one of them impossible to store (a retry
    # delay out of PostgreSQL's interval range)
    a, b, c = claimed
    with broker.completions._cond:  # held: the writer takes all three as one batch
        for m, kind, delay in ((a, ACK, 0), (b, RETRY, 2**62), (c, ACK, 0)):
            broker.completions.submit(
                Completion(kind, m.queue_name, m.message_id, m.attempt, delay_ms=delay)
            )
    assert broker.completions.flush(10)

    # Then the other two are written, and the bad one is dead-lettered with the reason
    assert broker.stats()["backlog"] == 0
    [dead] = broker.dead_letters()
    assert dead.message_id == b.message_id
    assert dead.error.startswith("its retry could not be written: DataError")
    consumer.close()


def test_clean_text_keeps_what_postgresql_can_store() -> None:
    assert clean_text(None) is None
    assert clean_text("plain é") == "plain é"
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text(os.fsdecode(b"caf\xe9")) == "caf\\udce9"


def test_an_error_with_a_lone_surrogate_does_not_stop_the_acks(
    runs_db: str, worker_processes
) -> None:
    # Given a worker process
    wp = worker_processes(runs_db, threads=2)
    wp.wait_ready()
    broker = PostgresBroker(runs_db)
    try:
        # When a message fails with a non-UTF-8 file name and a NUL in its error, then
        # good messages follow
        broker.enqueue(message("odd_failure", "odd"))
        wait_for(lambda: broker.stats()["dead_letters"] == 1, what="the dead letter")
        broker.enqueue_many([message("run", f"after{i}") for i in range(5)])

        # Then the failure is dead-lettered with a cleaned error, the others are acked, and
        # the worker lives on
        wait_for(lambda: broker.stats()["backlog"] == 0, what="the acks")
        [dead] = broker.dead_letters()
        assert "caf\\udce9.txt\ufffd for odd" in dead.error
        assert "\x00" not in dead.traceback
        assert wp.proc.poll() is None
    finally:
        broker.close()


def test_close_leaves_a_hung_heartbeat_its_own_connection(broker: PostgresBroker) -> None:
    # Given a consuming broker whose heartbeat hangs inside a statement of its connection
    @dramatiq.actor(broker=broker)
    def job():
        pass

    consumer = broker.consume(job.queue_name, prefetch=1, timeout=100)
    heartbeat = broker.heartbeat
    hung, release, seen = threading.Event(), threading.Event(), {}

    def hang(conn):
        seen["conn"] = conn
        hung.set()
        release.wait(60)
        return 1

    heartbeat.beat = lambda: heartbeat._link.run(hang)
    wait_for(hung.is_set, what="the heartbeat to hang")
    try:
        # When the broker is closed (the heartbeat's join times out)
        consumer.close()
        broker.close()

        # Then the claims were released on another connection, and the hung thread's
        # connection was neither used nor closed under it
        assert sql(broker.url, "SELECT count(*) FROM broker_workers") == [(0,)]
        assert not seen["conn"].closed
    finally:
        release.set()
    heartbeat.join(10)
    assert not heartbeat.is_alive()


# -- no silent thread death --------------------------------------------------------------


@pytest.mark.fault
@pytest.mark.parametrize("thread", ["heartbeat", "listener", "completions"])
def test_a_dead_broker_thread_exits_the_worker(runs_db: str, worker_processes, thread) -> None:
    # Given a worker process
    wp = worker_processes(runs_db, threads=2)
    wp.wait_ready()
    broker = PostgresBroker(runs_db)
    try:
        # When one of its broker threads dies (a notification wakes the listener)
        broker.enqueue(message("sabotage", thread))
        wait_for(lambda: events(runs_db, thread), what="the sabotage")
        broker.enqueue(message("run", "poke"))

        # Then the process exits with the watchdog's status, saying why
        wait_for(lambda: wp.proc.poll() is not None, what="the worker to exit")
        assert wp.proc.returncode == EXIT_THREAD_DIED
        assert f"nexus-broker-{thread} died" in wp.output()
    finally:
        broker.close()


# -- lease loss and the delivery cap -----------------------------------------------------


def test_the_lease_is_valid_until_it_may_have_lapsed() -> None:
    # Given a 6 s lease renewed by a heartbeat sent at t
    lease = Lease(6_000)
    assert not lease.valid()  # never renewed
    t = monotonic()
    lease.renewed(t)

    # Then it holds for messages of this epoch until t + 6 s (exclusive), not after
    assert lease.valid(t + 5.999) and not lease.valid(t + 6.0)
    assert lease.holds(lease.epoch) and not lease.holds(lease.epoch - 1)

    # And a lapse makes every earlier claim suspect, even once renewed again
    epoch = lease.epoch
    lease.lapse()
    assert not lease.valid()
    lease.renewed(monotonic())
    assert lease.valid() and not lease.holds(epoch) and lease.holds(epoch + 1)
    lease.renewed(t)  # an older renewal arriving late changes nothing
    assert lease.valid()


@pytest.mark.fault
def test_a_stopped_worker_past_its_lease_does_not_run_its_prefetched_messages(
    runs_db: str, worker_processes
) -> None:
    # Given worker A (1 thread) running a slow job with another message prefetched behind it
    a = worker_processes(runs_db, threads=1)
    a_pid = a.wait_ready()
    broker = PostgresBroker(runs_db)
    try:
        broker.enqueue(message("slow", "s", 12))
        wait_for(lambda: events(runs_db, "s"), what="s to start")
        broker.enqueue(message("run", "q"))
        wait_for(lambda: broker.stats()["claimed"] == 2, what="q prefetched")
        b = worker_processes(runs_db, threads=2)
        b_pid = b.wait_ready()

        # When A is stopped past its lease (B takes both over), then continued
        os.kill(a_pid, signal.SIGSTOP)
        try:
            wait_for(lambda: ("done", b_pid) in events(runs_db, "q"), what="B to run q")
            wait_for(lambda: ("done", b_pid) in events(runs_db, "s"), what="B to run s")
        finally:
            os.kill(a_pid, signal.SIGCONT)

        # Then A finishes its running job (its ack fenced out) and gives q back unstarted
        wait_for(lambda: ("done", a_pid) in events(runs_db, "s"), what="A to finish s")
        wait_for(
            lambda: "Gave back 1 prefetched" in a.output() or len(events(runs_db, "q")) > 1,
            what="A to give q back",
        )
        assert events(runs_db, "q") == [("done", b_pid)]
        wait_for(lambda: "1 late ack outcome(s) fenced out" in a.output(), what="A's late ack")
        broker.join("default", timeout=10_000)
        assert broker.stats()["dead_letters"] == 0
    finally:
        broker.close()


@pytest.mark.fault
@pytest.mark.slow
def test_a_message_that_kills_its_worker_ends_in_the_dead_letters(
    runs_db: str, worker_processes
) -> None:
    # Given a message whose actor kills its own process (max_retries=0: 3 deliveries at most)
    broker = PostgresBroker(runs_db)
    try:
        broker.enqueue(message("suicide", "k"))

        # When workers are restarted as a supervisor would, each time one dies
        for _ in range(8):
            wp = worker_processes(runs_db, threads=1, BROKER_TEST_LEASE_MS="2000")
            wait_for(
                lambda wp=wp: wp.proc.poll() is not None or broker.stats()["dead_letters"],
                what="the worker to die or the dead letter",
            )
            if broker.stats()["dead_letters"]:
                break

        # Then after 3 deliveries it is dead-lettered at the claim, with the reason
        [dead] = broker.dead_letters()
        assert dead.error == "delivered 3 times without an outcome (worker lost)"
        assert [e for e, _ in events(runs_db, "k")] == ["attempt"] * 3
        assert broker.stats()["backlog"] == 0
        assert wp.proc.poll() is None  # the last worker is alive and well
    finally:
        broker.close()


@pytest.mark.fault
@pytest.mark.slow
def test_a_job_holding_the_gil_past_the_lease_cannot_livelock_two_workers(
    runs_db: str, worker_processes
) -> None:
    # Given two workers (1 thread each, 2 s leases) and a job that holds the GIL for about
    # twice the lease (each worker that takes it stalls, and the other reclaims it), with a
    # quick message queued behind it
    for _ in range(2):
        worker_processes(runs_db, threads=1, BROKER_TEST_LEASE_MS="2000")
    wait_for(lambda: sql(runs_db, "SELECT count(*) FROM broker_workers")[0][0] == 2)
    broker = PostgresBroker(runs_db)
    try:
        broker.enqueue(message("hog", "h", 4 * 10**8))
        broker.enqueue(message("run", "q"))

        # Then everything ends: the quick message ran exactly once, and the hog was started at
        # most max_retries + 3 = 3 times (dead-lettered at the cap, unless one run kept its
        # claim to the end and was acked)
        wait_for(lambda: broker.stats()["backlog"] == 0, timeout=120, what="the queue to end")
        assert [e for e, _ in events(runs_db, "q")] == ["done"]
        starts = [e for e, _ in events(runs_db, "h")].count("start")
        assert 1 <= starts <= 3
        dead = broker.dead_letters()
        assert [d.error for d in dead] in (
            [],
            ["delivered 3 times without an outcome (worker lost)"],
        )
    finally:
        broker.close()


# -- SIGTERM ----------------------------------------------------------------------------


@pytest.mark.fault
def test_sigterm_gives_back_prefetched_messages_while_the_running_job_finishes(
    runs_db: str, worker_processes
) -> None:
    # Given a worker (1 thread) running a long job, with a message prefetched behind it
    a = worker_processes(runs_db, threads=1)
    a.wait_ready()
    broker = PostgresBroker(runs_db)
    try:
        broker.enqueue(message("slow", "long", 10))
        wait_for(lambda: events(runs_db, "long"), what="the long job to start")
        broker.enqueue(message("run", "queued"))
        wait_for(lambda: broker.stats()["claimed"] == 2, what="the prefetch")

        # When it is sent SIGTERM
        a.terminate()

        # Then the prefetched message is ready again while the long job still runs, and a
        # message sent now is not claimed by the stopping worker
        wait_for(lambda: broker.stats()["ready"] == 1, what="the prefetched message")
        assert [e for e, _ in events(runs_db, "long")] == ["start"]
        broker.enqueue(message("run", "late"))
        assert a.proc.wait(60) == 0
        assert [e for e, _ in events(runs_db, "long")] == ["start", "done"]
        stats = broker.stats()
        assert (stats["ready"], stats["claimed"]) == (2, 0)
        assert events(runs_db, "queued") == [] and events(runs_db, "late") == []
    finally:
        broker.close()
