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

from nexus.broker import PostgresBroker
from nexus.db import make_engine

URL = os.environ["DATABASE_URL"]

broker = PostgresBroker(URL, max_retries=3, min_backoff=50, max_backoff=500)
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
