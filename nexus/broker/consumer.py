"""A consumer of one queue: batched claims, woken by NOTIFY, by the next due time, or a poll."""

from __future__ import annotations

import collections
import logging
import threading
from typing import TYPE_CHECKING

import dramatiq
import sqlalchemy as sa
from dramatiq.message import Message

from ..db import is_unavailable
from .completions import ACK, DEAD, REQUEUE, RETRY, Completion
from .link import Link
from .retries import describe
from .sql import q

if TYPE_CHECKING:
    from .broker import PostgresBroker

logger = logging.getLogger(__name__)

#: Seconds to wait after a failed claim before trying again (the database is away).
FAILURE_DELAY = 0.25
#: Milliseconds added to a due time before waking for it, so the claim finds it due.
DUE_SLACK_MS = 1


class PostgresMessage(dramatiq.MessageProxy):
    """A claimed message.  ``attempt`` fences its outcome; the Retries middleware leaves its
    verdict in ``retry_in_ms`` / ``error`` / ``traceback`` for the ack to write."""

    def __init__(self, message: Message, *, attempt: int, consumer: Consumer):
        super().__init__(message)
        self.attempt = attempt
        self.consumer = consumer
        self.retry_in_ms: int | None = None
        self.error: str | None = None
        self.traceback: str | None = None
        self.settled = False


class Consumer(dramatiq.Consumer):
    """Claims due messages of ``queue_name`` in batches and hands them out one by one.

    At most ``prefetch`` messages are held (claimed and not yet acked), counting those
    running.  ``__next__`` returns None within ``timeout`` ms when nothing is due.  Between
    claims it waits on an event set by the process's LISTEN thread, for no longer than the
    next delayed message's due time, nor than the timeout (which is the polling fallback).
    """

    def __init__(self, broker: PostgresBroker, queue_name: str, prefetch: int, timeout: int):
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = max(1, prefetch)
        #: Claim when at least this many slots are free (a refill, not one message at a time).
        self.refill = max(1, self.prefetch // 2)
        self.timeout = timeout / 1000
        self._link = Link(broker.engine)
        self._buffer: collections.deque[PostgresMessage] = collections.deque()
        self._lock = threading.Lock()
        self._held = 0  #: claimed by this consumer and not yet settled
        self._slot_freed = threading.Event()
        self._wakeup = threading.Event()
        self._must_claim = True
        self._due_in: float | None = None  #: seconds until the next delayed message is due
        self._unsure = False  #: a claim may have committed without our seeing its result
        self._failing = False  #: the last database call failed (log once per outage)
        broker.listener.subscribe(queue_name, self._wakeup)

    # -- handing out -------------------------------------------------------------------

    def __next__(self) -> PostgresMessage | None:
        if not self._buffer:
            self._fill()
        return self._buffer.popleft() if self._buffer else None

    def _fill(self) -> None:
        if self.prefetch - self._held < self.refill:
            self._slot_freed.wait(self.timeout)
            self._slot_freed.clear()
            return
        if not self._must_claim:
            wait = self.timeout
            if self._due_in is not None:
                wait = min(wait, self._due_in)
            if not self.broker.listener.connected.is_set():
                wait = min(wait, self.broker.poll_interval_unlistened)
            self._wakeup.wait(wait)
        self._wakeup.clear()
        try:
            if self._unsure:
                self._release_unknown()
            claimed = self._claim(self.prefetch - self._held)
            # A partial batch may have left delayed messages: claim again (after handing this
            # batch out), and learn the next due time when nothing is due.
            self._must_claim = claimed > 0
            if not claimed:
                self._due_in = self._next_due()
        except sa.exc.SQLAlchemyError as exc:
            if not is_unavailable(exc):
                raise
            self._unsure = True
            self._must_claim = True
            if not self._failing:
                logger.warning(
                    "Cannot claim from %r, retrying: %s", self.queue_name, str(exc).splitlines()[0]
                )
            self._failing = True
            self._wakeup.wait(min(self.timeout, FAILURE_DELAY))
            return
        if self._failing:
            logger.info("Claiming from %r again.", self.queue_name)
            self._failing = False

    def _claim(self, limit: int) -> int:
        params = {
            "queue_name": self.queue_name,
            "worker_id": self.broker.worker_id,
            "limit": limit,
        }
        rows = self._link.run(lambda c: c.execute(q("claim"), params).all())
        if not rows:
            return 0
        self.broker.holdings.add(self.queue_name, (str(r.message_id) for r in rows))
        with self._lock:
            self._held += len(rows)
        for r in rows:
            options = dict(r.options)
            options["retries"] = r.retries
            message = Message(
                queue_name=r.queue_name,
                actor_name=r.actor_name,
                args=tuple(r.args),
                kwargs=r.kwargs,
                options=options,
                message_id=str(r.message_id),
                message_timestamp=r.message_timestamp,
            )
            self._buffer.append(PostgresMessage(message, attempt=r.attempts, consumer=self))
        return len(rows)

    def _next_due(self) -> float | None:
        due_in_ms = self._link.run(
            lambda c: c.execute(q("next_due"), {"queue_name": self.queue_name}).scalar()
        )
        return None if due_in_ms is None else max(0.0, (float(due_in_ms) + DUE_SLACK_MS) / 1000)

    def _release_unknown(self) -> None:
        held = self.broker.holdings.snapshot(self.queue_name)
        params = {"worker_id": self.broker.worker_id, "queue_name": self.queue_name, "held": held}
        self._link.run(lambda c: c.execute(q("release_unknown"), params).all())
        self._unsure = False

    # -- outcomes (called from worker threads) -------------------------------------------

    def ack(self, message: PostgresMessage) -> None:
        if message.retry_in_ms is not None:
            self._settle(message, RETRY, delay_ms=message.retry_in_ms, error=message.error)
        else:
            self._settle(message, ACK)

    def nack(self, message: PostgresMessage) -> None:
        error, tb = message.error, message.traceback
        if error is None and message._exception is not None:
            error, tb = describe(message._exception)
        self._settle(message, DEAD, error=error, traceback=tb)

    def requeue(self, messages) -> None:
        for message in messages:
            self._settle(message, REQUEUE)
        self.broker.completions.flush(self.broker.shutdown_flush_timeout)

    def _settle(self, message: PostgresMessage, kind: str, **extra) -> None:
        owner = message.consumer
        with owner._lock:
            if message.settled:
                return
            message.settled = True
            owner._held -= 1
        owner._slot_freed.set()
        self.broker.completions.submit(
            Completion(kind, message.queue_name, message.message_id, message.attempt, **extra)
        )

    def close(self) -> None:
        """Give back the claimed messages not handed out yet, and write pending outcomes."""
        self.broker.listener.unsubscribe(self.queue_name, self._wakeup)
        buffered, self._buffer = list(self._buffer), collections.deque()
        for message in buffered:
            self._settle(message, REQUEUE)
        self.broker.completions.flush(self.broker.shutdown_flush_timeout)
        self._link.close()
