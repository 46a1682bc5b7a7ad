"""A Dramatiq broker whose queues are rows of a PostgreSQL table."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dramatiq
import psycopg2
import sqlalchemy as sa
from dramatiq.errors import QueueJoinTimeout
from dramatiq.message import Message
from dramatiq.middleware import CurrentMessage, Middleware, default_middleware

from ..db import make_engine, translate_errors
from ..errors import DatabaseUnavailable
from .completions import Completions
from .consumer import TRANSIENT_OPTIONS, Consumer
from .gate import Gate
from .heartbeat import Heartbeat
from .holdings import Holdings
from .lease import Lease
from .link import Link
from .listener import Listener
from .retries import (
    DEFAULT_MAX_BACKOFF,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MIN_BACKOFF,
    Retries,
    replace_dramatiq_retries,
)
from .sql import q
from .watchdog import exit_process

#: Milliseconds a worker's claims survive without a heartbeat.  A killed worker's messages are
#: redelivered after at most LEASE_MS + HEARTBEAT_MS (the reaper runs with the heartbeat).
LEASE_MS = 6_000
#: Milliseconds between heartbeats (each also reaps expired workers).
HEARTBEAT_MS = 1_000
#: Seconds between polls while the LISTEN connection is down.
POLL_INTERVAL_UNLISTENED = 0.5
#: Seconds a closing consumer or broker waits for outcomes to be written.
SHUTDOWN_FLUSH_TIMEOUT = 10.0
#: Seconds between polls of join().
JOIN_POLL_INTERVAL = 0.02
#: Seconds a draining worker waits for its given-back messages to be written.
DRAIN_FLUSH_TIMEOUT = 1.0


@dataclass(frozen=True)
class DeadLetter:
    """A message that failed for good (retries exhausted, ``throws``, unknown actor)."""

    message_id: str
    queue_name: str
    actor_name: str
    args: list
    kwargs: dict
    options: dict
    retries: int
    attempts: int
    error: str | None
    traceback: str | None
    enqueued_at: datetime
    failed_at: datetime


class PostgresBroker(dramatiq.Broker):
    """Dramatiq over PostgreSQL: messages in ``broker_messages``, wake-ups by LISTEN/NOTIFY,
    claims by ``FOR UPDATE SKIP LOCKED``, delays and retries as due times in the table.

    Parameters:
      url: a ``postgresql://`` URL (the psycopg2 driver is chosen here).
      engine: a SQLAlchemy engine to use instead of making one from ``url``.
      middleware: as for :class:`dramatiq.Broker`; Dramatiq's ``Retries`` is replaced by
        :class:`nexus.broker.Retries` (same settings).  Defaults: Dramatiq's defaults with
        our Retries, plus ``CurrentMessage``.
      max_retries, min_backoff, max_backoff: defaults of the Retries middleware (backoff in ms)
        when ``middleware`` is not given.
      lease_ms, heartbeat_ms: how long a silent worker keeps its claims, and how often a live
        one renews them.

    Failure handling: a listener, heartbeat or outcome-writer thread that dies calls
    :attr:`on_thread_death` (default: log and exit the process with status 70, so the
    supervisor restarts a whole worker).  :meth:`drain` (SIGTERM) stops claiming and gives
    back what is prefetched; a lapsed lease gives it back too (see :class:`Gate`).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        engine: sa.Engine | None = None,
        middleware: list[Middleware] | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        min_backoff: int = DEFAULT_MIN_BACKOFF,
        max_backoff: int = DEFAULT_MAX_BACKOFF,
        lease_ms: int = LEASE_MS,
        heartbeat_ms: int = HEARTBEAT_MS,
        pool_size: int = 10,
    ):
        if url is None and engine is None:
            raise ValueError("PostgresBroker needs a url or an engine")
        if heartbeat_ms * 2 > lease_ms:
            raise ValueError("lease_ms must be at least twice heartbeat_ms")
        if middleware is None:
            middleware = [
                Retries(max_retries=max_retries, min_backoff=min_backoff, max_backoff=max_backoff)
                if m is dramatiq.middleware.Retries
                else m()
                for m in default_middleware
            ]
            middleware.append(CurrentMessage())
        self.url = url if url is not None else engine.url.render_as_string(hide_password=False)
        self._given_engine = engine
        self._engine: sa.Engine | None = engine
        self._pool_size = pool_size
        self._pid = os.getpid()
        middleware = [replace_dramatiq_retries(m) for m in middleware]
        if not any(isinstance(m, Gate) for m in middleware):
            middleware.append(Gate())
        super().__init__(middleware=middleware)
        self.queues: dict[str, None] = {}
        self.lease_ms = lease_ms
        self.heartbeat_ms = heartbeat_ms
        self.poll_interval_unlistened = POLL_INTERVAL_UNLISTENED
        self.shutdown_flush_timeout = SHUTDOWN_FLUSH_TIMEOUT
        self.worker_id = str(uuid.uuid4())
        self.holdings = Holdings()
        self.lease = Lease(lease_ms)
        #: Set once the worker stops: no more claims, prefetched messages given back.
        self.draining = threading.Event()
        self.consumers: weakref.WeakSet[Consumer] = weakref.WeakSet()
        #: Called with (thread, exception) when a broker thread dies.
        self.on_thread_death = exit_process
        self._started = False
        self._start_lock = threading.Lock()
        self.listener: Listener | None = None
        self.heartbeat: Heartbeat | None = None
        self.completions: Completions | None = None

    # -- plumbing ------------------------------------------------------------------------

    @property
    def engine(self) -> sa.Engine:
        """The broker's engine, made on first use (and again in a forked child)."""
        if self._engine is None or (self._given_engine is None and self._pid != os.getpid()):
            if self._engine is not None:
                self._engine.dispose(close=False)
            self._pid = os.getpid()
            # Every broker statement stands alone: autocommit saves the BEGIN/COMMIT round
            # trips, and set on the engine it is never reset on a (possibly dead) connection.
            self._engine = make_engine(
                self.url,
                application_name="nexus-broker",
                pool_size=self._pool_size,
                max_overflow=self._pool_size,
                isolation_level="AUTOCOMMIT",
            )
        return self._engine

    @property
    def retries(self) -> Retries | None:
        """The Retries middleware (its attributes are the defaults for every actor)."""
        return next((m for m in self.middleware if isinstance(m, Retries)), None)

    def add_middleware(self, middleware: Middleware, *, before=None, after=None) -> None:
        """As Dramatiq's, except that our Retries replaces Dramatiq's and that middleware
        added at the end goes before the :class:`Gate`, which stays last: every middleware
        then sees both hooks of a message the Gate skips (a Prometheus gauge stays right)."""
        middleware = replace_dramatiq_retries(middleware)
        at_end = before is None and after is None and not isinstance(middleware, Gate)
        if at_end and any(isinstance(m, Gate) for m in self.middleware):
            before = Gate
        super().add_middleware(middleware, before=before, after=after)

    def _start(self) -> None:
        """Start the process's listener, heartbeat and outcome writer (once, on consume)."""
        with self._start_lock:
            if self._started:
                return
            self.draining.clear()
            self.lease = Lease(self.lease_ms)
            self.listener = Listener(self.url, on_death=self._thread_died)
            self.listener.start()
            self.heartbeat = Heartbeat(
                self.engine,
                self.worker_id,
                lease=self.lease,
                lease_ms=self.lease_ms,
                interval_ms=self.heartbeat_ms,
                on_lapse=self._lease_lapsed,
                on_death=self._thread_died,
            )
            self.heartbeat.start()
            self.completions = Completions(self.engine, self.holdings, on_death=self._thread_died)
            self.completions.start()
            # LISTEN before the first sweep, and be known before the first claim.
            self.listener.connected.wait(5.0)
            self.heartbeat.registered.wait(5.0)
            self._started = True

    def _thread_died(self, thread: threading.Thread, exc: BaseException) -> None:
        self.on_thread_death(thread, exc)

    def _lease_lapsed(self) -> None:
        for consumer in list(self.consumers):
            consumer.give_back("this worker's lease may have lapsed")

    def drain(self) -> None:
        """Stop claiming at once and give back every prefetched message not started yet
        (running jobs go on).  Idempotent; called on SIGTERM and by ``Worker.stop()``."""
        if self.draining.is_set():
            return
        self.draining.set()
        given_back = sum(c.give_back("the worker is shutting down") for c in list(self.consumers))
        if given_back and self.completions is not None:
            self.completions.flush(DRAIN_FLUSH_TIMEOUT)

    def close(self) -> None:
        """Write pending outcomes, give back this worker's claims, stop the threads."""
        if self._started:
            self.draining.set()
            self.completions.stop(self.shutdown_flush_timeout)
            self.heartbeat.stop()
            # On a connection of its own: the heartbeat's may still be in a hung statement.
            link = Link(self.engine)
            try:
                link.run(lambda c: c.execute(q("unregister_worker"), {"worker_id": self.worker_id}))
            except sa.exc.SQLAlchemyError:
                self.logger.warning("Could not release this worker's claims; its lease will.")
            finally:
                link.close()
            self.listener.stop()
            self._started = False
        if self._engine is not None and self._given_engine is None:
            self._engine.dispose()
            self._engine = None

    # -- dramatiq.Broker -----------------------------------------------------------------

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30_000) -> Consumer:
        if queue_name not in self.queues:
            raise dramatiq.errors.QueueNotFound(queue_name)
        self._start()
        return Consumer(self, queue_name, prefetch, timeout)

    def declare_queue(self, queue_name: str) -> None:
        if queue_name not in self.queues:
            self.emit_before("declare_queue", queue_name)
            self.queues[queue_name] = None
            self.emit_after("declare_queue", queue_name)

    def enqueue(
        self, message: Message, *, delay: int | None = None, connection: sa.Connection | None = None
    ) -> Message:
        """Store ``message``, due in ``delay`` ms.  Idempotent on the message id: an id that
        is live or dead-lettered already is a no-op (the first message stands).

        With ``connection`` (a SQLAlchemy Connection in a transaction of the caller's), the
        message is written in that transaction: it exists, and consumers are woken, only if
        and when the caller commits.  Without it, the message is committed before this
        returns.  A database that is down raises :class:`nexus.errors.DatabaseUnavailable`
        within a few seconds (connect and pool timeouts).
        """
        self.emit_before("enqueue", message, delay)
        params = _row(message, delay)
        with _translated():
            if connection is not None:
                connection.execute(q("enqueue"), params)
            else:
                with self.engine.begin() as conn:
                    conn.execute(q("enqueue"), params)
        self.emit_after("enqueue", message, delay)
        return message

    def enqueue_many(
        self,
        messages: Sequence[Message],
        *,
        delay: int | None = None,
        connection: sa.Connection | None = None,
    ) -> None:
        """Store many messages with one statement (and one wake-up per queue)."""
        rows = [_row(m, delay) for m in messages]
        if not rows:
            return
        for m in messages:
            self.emit_before("enqueue", m, delay)
        params = {
            "message_ids": [r["message_id"] for r in rows],
            "queue_names": [r["queue_name"] for r in rows],
            "actor_names": [r["actor_name"] for r in rows],
            "args": [r["args"] for r in rows],
            "kwargs": [r["kwargs"] for r in rows],
            "options": [r["options"] for r in rows],
            "timestamps": [r["message_timestamp"] for r in rows],
            "delays": [r["delay_ms"] for r in rows],
        }
        with _translated():
            if connection is not None:
                connection.execute(q("enqueue_many"), params)
            else:
                with self.engine.begin() as conn:
                    conn.execute(q("enqueue_many"), params)
        for m in messages:
            self.emit_after("enqueue", m, delay)

    def flush(self, queue_name: str) -> None:
        """Drop every live message (ready, delayed, claimed) of the queue."""
        self._delete("flush", [queue_name])

    def flush_all(self) -> None:
        """Drop every live message and dead letter of the declared queues."""
        self._delete("flush", list(self.queues))
        self._delete("flush_dead_letters", list(self.queues))

    def _delete(self, query: str, queue_names: list[str]) -> None:
        with _translated(), self.engine.begin() as conn:
            conn.execute(q(query), {"queue_names": queue_names})

    def join(self, queue_name: str, *, timeout: int | None = None) -> None:
        """Wait until the queue has no live message left (for tests).  ``timeout`` in ms,
        measured on the database clock; raises ``QueueJoinTimeout``."""
        started = None
        idle = threading.Event()
        while True:
            with _translated(), self.engine.connect() as conn:
                row = conn.execute(q("pending_count"), {"queue_name": queue_name}).one()
            if row.pending == 0:
                return
            started = started or row.now
            if timeout is not None and (row.now - started).total_seconds() * 1000 >= timeout:
                raise QueueJoinTimeout(queue_name)
            idle.wait(JOIN_POLL_INTERVAL)

    # -- inspection ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Backlog and dead letters: ``{"ready", "delayed", "claimed", "backlog",
        "dead_letters", "queues": {name: {"ready", "delayed", "claimed", "dead_letters",
        "oldest_ready_s"}}}``.  ``ready`` is due now, ``delayed`` due later (retries, delays),
        ``claimed`` prefetched or running; ``backlog`` is their sum."""
        with _translated(), self.engine.connect() as conn:
            rows = conn.execute(q("stats")).all()
        queues = {
            r.queue_name: {
                "ready": r.ready,
                "delayed": r.delayed,
                "claimed": r.claimed,
                "dead_letters": r.dead_letters,
                "oldest_ready_s": None if r.oldest_ready_s is None else float(r.oldest_ready_s),
            }
            for r in rows
        }
        totals = {k: sum(v[k] for v in queues.values()) for k in ("ready", "delayed", "claimed")}
        totals["backlog"] = sum(totals.values())
        totals["dead_letters"] = sum(v["dead_letters"] for v in queues.values())
        return {**totals, "queues": queues}

    def dead_letters(self, queue_name: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, newest first."""
        with _translated(), self.engine.connect() as conn:
            rows = conn.execute(q("dead_letters"), {"queue_name": queue_name, "limit": limit})
            return [DeadLetter(**{**r._asdict(), "message_id": str(r.message_id)}) for r in rows]

    def forget_dead_letters(self, max_age_s: float, batch_size: int = 1000) -> int:
        """Delete dead letters older than ``max_age_s`` seconds, one short transaction per
        batch; returns how many."""
        total = 0
        while True:
            with _translated(), self.engine.begin() as conn:
                deleted = conn.execute(
                    q("forget_dead_letters"), {"max_age_s": max_age_s, "limit": batch_size}
                ).rowcount
            total += deleted
            if deleted < batch_size:
                return total

    def has_live_message(self, actor_name: str, args_prefix: Iterable[Any]) -> bool:
        """Is a message for ``actor_name`` whose args begin with ``args_prefix`` still live
        (ready, delayed or claimed; not acked, not dead)?"""
        prefix = list(args_prefix)
        if not prefix:
            raise ValueError("args_prefix must not be empty")
        with _translated(), self.engine.connect() as conn:
            return conn.execute(
                q("has_live_message"), {"actor_name": actor_name, "prefix": json.dumps(prefix)}
            ).scalar_one()


@contextlib.contextmanager
def _translated():
    """:func:`nexus.db.translate_errors`, plus the raw driver errors SQLAlchemy lets through
    when it resets a connection that died while checked out."""
    try:
        with translate_errors():
            yield
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
        raise DatabaseUnavailable(str(exc).strip().splitlines()[0]) from exc


def _row(message: Message, delay: int | None) -> dict[str, Any]:
    options = {k: v for k, v in message.options.items() if k not in TRANSIENT_OPTIONS}
    return {
        "message_id": message.message_id,
        "queue_name": message.queue_name,
        "actor_name": message.actor_name,
        "args": json.dumps(list(message.args), separators=(",", ":")),
        "kwargs": json.dumps(message.kwargs, separators=(",", ":")),
        "options": json.dumps(options, separators=(",", ":")),
        "message_timestamp": message.message_timestamp,
        "delay_ms": max(0, int(delay or 0)),
    }
