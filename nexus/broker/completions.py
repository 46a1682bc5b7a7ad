"""Outcomes of processed messages, written in batches by one thread (group commit)."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass

import sqlalchemy as sa

from .holdings import Holdings
from .link import Link
from .sql import q

logger = logging.getLogger(__name__)

ACK = "ack"
RETRY = "retry"
DEAD = "dead_letter"
REQUEUE = "requeue"

#: Seconds between attempts to write outcomes while the database is away, doubling up to max.
MIN_RETRY_DELAY = 0.05
MAX_RETRY_DELAY = 1.0


@dataclass(frozen=True, slots=True)
class Completion:
    """One outcome: ``kind`` of the message claimed with fence ``attempt``."""

    kind: str
    queue_name: str
    message_id: str
    attempt: int
    delay_ms: int = 0
    error: str | None = None
    traceback: str | None = None


class Completions(threading.Thread):
    """Writes acks, retries, dead letters and requeues for the whole process.

    Worker threads only append to a list; this thread takes everything pending and writes it
    with one statement per kind, so acks cost a fraction of a round trip each at high rates
    and nothing at all is waited for at low ones (no timer: the batch is whatever piled up
    while the previous one was being written).  Every statement is fenced by the claim's
    attempt number and by ``state = 'claimed'``, so writing a batch twice changes nothing; on
    a lost connection the batch is simply written again.  Acks never notify.
    """

    def __init__(self, engine: sa.Engine, holdings: Holdings):
        super().__init__(name="nexus-broker-completions", daemon=True)
        self.holdings = holdings
        self._link = Link(engine)
        self._cond = threading.Condition()
        self._pending: list[Completion] = []
        self._submitted = 0  #: completions submitted so far
        self._written = 0  #: completions written so far
        self._stopping = False

    def submit(self, completion: Completion) -> None:
        with self._cond:
            self._pending.append(completion)
            self._submitted += 1
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is written; False on timeout."""
        with self._cond:
            target = self._submitted
            return self._cond.wait_for(lambda: self._written >= target, timeout)

    def stop(self, timeout: float = 10.0) -> bool:
        """Write what is pending (waiting up to ``timeout`` seconds), then end the thread."""
        written = self.flush(timeout) if self.is_alive() else not self._pending
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self.is_alive():
            self.join(timeout)
        self._link.close()
        return written

    def run(self) -> None:
        delay = MIN_RETRY_DELAY
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._stopping)
                if self._stopping:
                    return
                batch, self._pending = self._pending, []
            try:
                self._write(batch)
            except sa.exc.SQLAlchemyError as exc:
                if delay == MIN_RETRY_DELAY:
                    logger.warning(
                        "Could not write %d message outcome(s), will retry: %s",
                        len(batch),
                        str(exc).splitlines()[0],
                    )
                with self._cond:
                    self._pending[:0] = batch
                    self._cond.wait_for(lambda: self._stopping, delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)
                continue
            delay = MIN_RETRY_DELAY
            for c in batch:
                self.holdings.discard(c.queue_name, c.message_id)
            with self._cond:
                self._written += len(batch)
                self._cond.notify_all()

    def _write(self, batch: list[Completion]) -> None:
        by_kind: defaultdict[str, list[Completion]] = defaultdict(list)
        for c in batch:
            by_kind[c.kind].append(c)

        def write(conn: sa.Connection) -> None:
            for kind, items in by_kind.items():
                params = {
                    "message_ids": [c.message_id for c in items],
                    "attempts": [c.attempt for c in items],
                }
                if kind == RETRY:
                    params["delays"] = [c.delay_ms for c in items]
                    params["errors"] = [_clean(c.error) for c in items]
                elif kind == DEAD:
                    params["errors"] = [_clean(c.error) for c in items]
                    params["tracebacks"] = [_clean(c.traceback) for c in items]
                conn.execute(q(kind), params)

        self._link.run(write)


def _clean(text: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL characters."""
    return None if text is None else text.replace("\x00", "\ufffd")
