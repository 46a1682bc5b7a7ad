"""A consumer of one queue: batched claims, woken by NOTIFY, by the next due time, or a poll."""

from __future__ import annotations

import collections
import json
import logging
import threading
from typing import TYPE_CHECKING, Any

import dramatiq
import sqlalchemy as sa
from dramatiq.message import Message

from ..db import is_unavailable
from .completions import ACK, DEAD, REQUEUE, RETRY, Completion
from .link import Link
from .retries import DEFAULT_MAX_RETRIES, describe
from .sql import q

if TYPE_CHECKING:
    from .broker import PostgresBroker

logger = logging.getLogger(__name__)

#: Seconds to wait after a failed claim before trying again (the database is away).
FAILURE_DELAY = 0.25
#: Milliseconds added to a due time before waking for it, so the claim finds it due.
DUE_SLACK_MS = 1
#: Deliveries allowed beyond max_retries + 1 before a message is taken to kill its workers:
#: a message claimed more than max_retries + EXTRA_DELIVERIES times in all is dead-lettered.
EXTRA_DELIVERIES = 3
#: Options stored with a message that must be numbers (or null) for the middleware to work.
NUMERIC_OPTIONS = ("max_retries", "min_backoff", "max_backoff", "time_limit", "max_age")
#: Options that hold Python objects and can never come from a stored message.
CODE_OPTIONS = ("throws", "retry_when")
#: Options never taken from a stored message: the due time is a column, retries a counter.
TRANSIENT_OPTIONS = ("eta", "retries", "traceback", "requeue_timestamp")


class PostgresMessage(dramatiq.MessageProxy):
    """A claimed message.  ``attempt`` fences its outcome and ``epoch`` is the lease epoch of
    its claim; the Retries middleware leaves its verdict in ``retry_in_ms`` / ``error`` /
    ``traceback`` for the ack to write."""

    def __init__(self, message: Message, *, attempt: int, consumer: Consumer, epoch: int = 0):
        super().__init__(message)
        self.attempt = attempt
        self.consumer = consumer
        self.epoch = epoch
        self.retry_in_ms: int | None = None
        self.error: str | None = None
        self.traceback: str | None = None
        self.settled = False
        self.started = False


def poison_reason(row: Any, actors: dict) -> str | None:
    """Why a claimed row cannot become a runnable message (None when it can)."""
    if row.actor_name not in actors:
        return f"unknown actor {row.actor_name!r}"
    if not isinstance(row.args, list):
        return "args is not a JSON array"
    if not isinstance(row.kwargs, dict):
        return "kwargs is not a JSON object"
    if not isinstance(row.options, dict):
        return "options is not a JSON object"
    for name in NUMERIC_OPTIONS:
        value = row.options.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return f"option {name!r} is not a number"
    for name in CODE_OPTIONS:
        if name in row.options:
            return f"option {name!r} cannot come from a stored message"
    return None


class Consumer(dramatiq.Consumer):
    """Claims due messages of ``queue_name`` in batches and hands them out one by one.

    At most ``prefetch`` messages are held (claimed and not yet acked), counting those
    running.  ``__next__`` returns None within ``timeout`` ms when nothing is due.  Between
    claims it waits on an event set by the process's LISTEN thread, for no longer than the
    next delayed message's due time, nor than the timeout (which is the polling fallback).

    A message handed out waits in Dramatiq's work queue until a thread :meth:`start` s it;
    until then it can be given back (:meth:`give_back`): when this worker's lease may have
    lapsed, and at shutdown.  Rows that cannot become a message (poison) are dead-lettered
    alone at the claim; the rest of their batch runs.
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
        self._handed: dict[str, PostgresMessage] = {}  #: handed out, not started
        self._lock = threading.Lock()
        self._held = 0  #: claimed by this consumer and not yet settled
        self._slot_freed = threading.Event()
        self._wakeup = threading.Event()
        self._must_claim = True
        self._due_in: float | None = None  #: seconds until the next delayed message is due
        self._unsure = False  #: a claim may have committed without our seeing its result
        self._failing = False  #: the last database call failed (log once per outage)
        self._caps: tuple[int, str, int] | None = None  #: (actors seen, caps JSON, default)
        broker.listener.subscribe(queue_name, self._wakeup)
        broker.consumers.add(self)

    # -- handing out -------------------------------------------------------------------

    def __next__(self) -> PostgresMessage | None:
        if self.broker.draining.is_set():
            self.give_back("the worker is shutting down")
            self._wakeup.wait(self.timeout)
            self._wakeup.clear()
            return None
        if not self._buffer:
            self._fill()
        with self._lock:
            if not self._buffer:
                return None
            message = self._buffer.popleft()
            self._handed[message.message_id] = message
        return message

    def start(self, message: PostgresMessage) -> bool:
        """Called by a worker thread about to run ``message``: False if it was given back, or
        if this worker's lease may have lapsed since its claim (then it and every other
        message not started are given back)."""
        with self._lock:
            if message.settled:
                return False
            if self.broker.lease.holds(message.epoch):
                self._handed.pop(message.message_id, None)
                message.started = True
                return True
        self.give_back("this worker's lease may have lapsed")
        return False

    def give_back(self, reason: str) -> int:
        """Requeue (fenced) every claimed message not started yet; how many."""
        with self._lock:
            messages = [*self._buffer, *self._handed.values()]
            self._buffer.clear()
            self._handed.clear()
        for message in messages:
            self._settle(message, REQUEUE)
        if messages:
            logger.warning(
                "Gave back %d prefetched message(s) of %r: %s.",
                len(messages),
                self.queue_name,
                reason,
            )
        return len(messages)

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
        if not self.broker.lease.valid():
            # Not while the lease may have lapsed: the heartbeat renews it (or re-registers).
            self._must_claim = True
            self._wakeup.wait(min(self.timeout, FAILURE_DELAY))
            return
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

    def _delivery_caps(self) -> tuple[str, int]:
        """``(JSON object of max_retries by actor, default max_retries)`` for the claim's
        delivery cap; recomputed when actors are declared."""
        actors = self.broker.actors
        if self._caps is None or self._caps[0] != len(actors):
            retries = self.broker.retries
            default = getattr(retries, "max_retries", None)
            if not isinstance(default, int):
                default = DEFAULT_MAX_RETRIES
            caps = {}
            for name, actor in actors.items():
                value = actor.options.get("max_retries", default)
                caps[name] = value if isinstance(value, int) else default
            self._caps = (len(actors), json.dumps(caps), default)
        return self._caps[1], self._caps[2]

    def _claim(self, limit: int) -> int:
        caps, default = self._delivery_caps()
        params = {
            "queue_name": self.queue_name,
            "worker_id": self.broker.worker_id,
            "limit": limit,
            "max_retries": caps,
            "default_max_retries": default,
            "extra_deliveries": EXTRA_DELIVERIES,
        }
        epoch = self.broker.lease.epoch
        rows = self._link.run(lambda c: c.execute(q("claim"), params).all())
        if not rows:
            return 0
        live = [r for r in rows if not r.spent]
        for r in rows:
            if r.spent:
                logger.error(
                    "Message %s (%s) dead-lettered: claimed %d time(s) without an outcome; "
                    "it may kill its worker.",
                    r.message_id,
                    r.actor_name,
                    r.attempts,
                )
        if not live:
            return len(rows)
        self.broker.holdings.add(self.queue_name, (str(r.message_id) for r in live))
        messages = []
        for r in live:
            message_id = str(r.message_id)
            reason = poison_reason(r, self.broker.actors)
            if reason is None:
                try:
                    options = {k: v for k, v in r.options.items() if k not in TRANSIENT_OPTIONS}
                    options["retries"] = r.retries
                    message = Message(
                        queue_name=r.queue_name,
                        actor_name=r.actor_name,
                        args=tuple(r.args),
                        kwargs=r.kwargs,
                        options=options,
                        message_id=message_id,
                        message_timestamp=r.message_timestamp,
                    )
                except Exception as exc:  # noqa: BLE001  (any undecodable row is poison)
                    reason = f"undecodable: {describe(exc)[0]}"
            if reason is not None:
                logger.error("Message %s is poison (%s): dead-lettered.", message_id, reason)
                self.broker.completions.submit(
                    Completion(DEAD, r.queue_name, message_id, r.attempts, error=reason)
                )
                continue
            messages.append(
                PostgresMessage(message, attempt=r.attempts, consumer=self, epoch=epoch)
            )
        with self._lock:
            self._held += len(messages)
            self._buffer.extend(messages)
        if epoch != self.broker.lease.epoch or self.broker.draining.is_set():
            self.give_back("claimed while this worker's lease lapsed, or at shutdown")
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
            owner._handed.pop(message.message_id, None)
        owner._slot_freed.set()
        self.broker.completions.submit(
            Completion(kind, message.queue_name, message.message_id, message.attempt, **extra)
        )

    def close(self) -> None:
        """Give back the claimed messages not handed out yet, and write pending outcomes."""
        self.broker.listener.unsubscribe(self.queue_name, self._wakeup)
        self.broker.consumers.discard(self)
        with self._lock:
            buffered = list(self._buffer)
            self._buffer.clear()
        for message in buffered:
            self._settle(message, REQUEUE)
        self.broker.completions.flush(self.broker.shutdown_flush_timeout)
        self._link.close()
