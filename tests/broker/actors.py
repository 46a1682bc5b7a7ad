"""Actors run by the ``dramatiq`` worker subprocesses of the broker tests.

    DATABASE_URL=... python -m dramatiq tests.broker.actors -p 1 -t 8

Each actor records what it did in ``broker_test_runs`` (created by the tests), with its pid
and the message's retry count, so the tests can count executions.
"""

from __future__ import annotations

import os
import time

import dramatiq
import sqlalchemy as sa
from dramatiq.middleware import CurrentMessage

from nexus.broker import LEASE_MS, PostgresBroker
from nexus.db import make_engine

URL = os.environ["DATABASE_URL"]
#: A shorter lease for the tests that wait for many leases to run out.
LEASE = int(os.environ.get("BROKER_TEST_LEASE_MS", LEASE_MS))

broker = PostgresBroker(
    URL,
    max_retries=3,
    min_backoff=50,
    max_backoff=500,
    lease_ms=LEASE,
    heartbeat_ms=min(1_000, LEASE // 4),
)
dramatiq.set_broker(broker)
engine = make_engine(URL, application_name="nexus-test-actors", pool_size=8, max_overflow=8)

_RECORD = sa.text(
    "INSERT INTO broker_test_runs (key, event, pid, retries) VALUES (:key, :event, :pid, :retries)"
)


def record(key: str, event: str) -> None:
    message = CurrentMessage.get_current_message()
    with engine.begin() as conn:
        conn.execute(
            _RECORD,
            {"key": key, "event": event, "pid": os.getpid(), "retries": message.options["retries"]},
        )


def started_before(key: str) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text("SELECT count(*) FROM broker_test_runs WHERE key = :k AND event = 'start'"),
                {"k": key},
            ).scalar_one()
        )


@dramatiq.actor(max_retries=20)
def run(key: str) -> None:
    """Record one execution."""
    record(key, "done")


@dramatiq.actor(max_retries=20)
def slow(key: str, seconds: float) -> None:
    """Record a start; on the first delivery only, take ``seconds``; record the end."""
    first = not started_before(key)
    record(key, "start")
    if first:
        time.sleep(seconds)
    record(key, "done")


@dramatiq.actor(max_retries=2, min_backoff=100, max_backoff=1_000)
def fail(key: str) -> None:
    """Always fails: three attempts, then a dead letter."""
    record(key, "attempt")
    raise RuntimeError(f"failing on purpose: {key}")


@dramatiq.actor(max_retries=0)
def odd_failure(key: str) -> None:
    """Fails with a lone surrogate (a non-UTF-8 file name) and a NUL in its error."""
    record(key, "attempt")
    name = os.fsdecode(b"caf\xe9.txt")  # "caf\udce9.txt" under a UTF-8 locale
    raise OSError(f"cannot read {name}\x00 for {key}")


@dramatiq.actor(max_retries=0)
def suicide(key: str) -> None:
    """Kills its own worker process, like a segfault or the OOM killer would."""
    record(key, "attempt")
    os._exit(1)


def _boom(*args, **kwargs):
    raise RuntimeError("sabotaged by the test")


@dramatiq.actor(max_retries=0)
def sabotage(thread: str) -> None:
    """Makes one of the broker's threads die at its next step (a bug, simulated)."""
    if thread == "heartbeat":
        broker.heartbeat.beat = _boom
    elif thread == "listener":
        broker.listener._wake = _boom  # dies at the next notification
    elif thread == "completions":
        broker.completions.holdings = None  # dies after writing its next batch
    else:
        raise ValueError(thread)
    record(thread, "sabotaged")


@dramatiq.actor(max_retries=0)
def hog(key: str, n: int) -> None:
    """Holds the GIL for the whole of ``sum(range(n))`` (no heartbeat meanwhile)."""
    record(key, "start")
    sum(range(n))
    record(key, "done")
