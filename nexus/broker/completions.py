"""Outcomes of processed messages, written in batches by one thread (group commit)."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass, replace

import sqlalchemy as sa

from ..db import is_unavailable
from .holdings import Holdings
from .link import Link
from .sql import q
from .watchdog import GuardedThread

logger = logging.getLogger(__name__)

ACK = "ack"
RETRY = "retry"
DEAD = "dead_letter"
REQUEUE = "requeue"

#: Seconds between attempts to write outcomes while the database is away, doubling up to max.
MIN_RETRY_DELAY = 0.05
MAX_RETRY_DELAY = 1.0
#: Characters of a reason kept when an outcome could not be written and was dead-lettered.
REASON_LIMIT = 2_000


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


def clean_text(text: str | None) -> str | None:
    """Text PostgreSQL can store: NUL becomes U+FFFD, a lone surrogate (a non-UTF-8 file name
    decoded with ``surrogateescape``, say) its ``\\udcXX`` escape.  The one cleaning of every
    text the broker writes (errors, tracebacks, reasons)."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\ufffd")


class Completions(GuardedThread):
    """Writes acks, retries, dead letters and requeues for the whole process.

    Worker threads only append to a list; this thread takes everything pending and writes it
    with one statement per kind, so acks cost a fraction of a round trip each at high rates
    and nothing at all is waited for at low ones (no timer: the batch is whatever piled up
    while the previous one was being written).  Every statement is fenced by the claim's
    attempt number and by ``state = 'claimed'``, so writing a batch twice changes nothing; on
    a lost connection the batch is simply written again.  Acks never notify.

    A batch that fails for any other reason is split in halves until the outcome that cannot
    be written is alone; that one is dead-lettered with the reason, so one bad outcome never
    blocks the others.  An outcome written after its claim was lost (the lease lapsed and the
    message was released) is fenced out, and logged.
    """

    def __init__(self, engine: sa.Engine, holdings: Holdings, on_death=None):
        super().__init__("nexus-broker-completions", on_death)
        self.holdings = holdings
        self._link = Link(engine)
        self._cond = threading.Condition()
        self._pending: list[Completion] = []
        self._submitted = 0  #: completions submitted so far
        self._written = 0  #: completions written (or given up) so far
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
        """Write what is pending (waiting up to ``timeout`` seconds), then end the thread.
        The thread closes its own connection (a statement of its may still be running)."""
        written = self.flush(timeout) if self.is_alive() else not self._pending
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self.is_alive():
            self.join(timeout)
        return written

    def work(self) -> None:
        try:
            self._loop()
        finally:
            self._link.close()

    def _loop(self) -> None:
        delay = MIN_RETRY_DELAY
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._stopping)
                if self._stopping:
                    return
                batch, self._pending = self._pending, []
            try:
                self._write_splitting(batch)
            except sa.exc.SQLAlchemyError as exc:  # the database is away: all of it again
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

    def _write_splitting(self, batch: list[Completion]) -> None:
        """Write ``batch``; on a failure that is not the database being away, write each half
        on its own, down to the one outcome that fails, which is dead-lettered instead.
        Raises only when the database is away (the caller writes the whole batch again)."""
        try:
            self._write(batch)
        except Exception as exc:
            if isinstance(exc, sa.exc.SQLAlchemyError) and is_unavailable(exc):
                raise
            if len(batch) > 1:
                middle = len(batch) // 2
                self._write_splitting(batch[:middle])
                self._write_splitting(batch[middle:])
            else:
                self._bury(batch[0], exc)

    def _bury(self, c: Completion, exc: Exception) -> None:
        reason = clean_text(f"its {c.kind} could not be written: {type(exc).__name__}: {exc}")
        logger.error("Message %s: %s; dead-lettering it.", c.message_id, reason)
        try:  # a dead letter with nothing but the reason (no traceback, no original error)
            self._write([replace(c, kind=DEAD, error=reason[:REASON_LIMIT], traceback=None)])
            return
        except Exception as again:
            if isinstance(again, sa.exc.SQLAlchemyError) and is_unavailable(again):
                raise
            exc = again
        # Even its dead letter fails: leave it claimed; this worker's lease releases it at
        # exit, and the delivery cap ends it.
        logger.error(
            "Message %s: could not dead-letter it either (%s); left to the delivery cap.",
            c.message_id,
            clean_text(f"{type(exc).__name__}: {exc}"),
        )

    def _write(self, batch: list[Completion]) -> None:
        by_kind: defaultdict[str, list[Completion]] = defaultdict(list)
        for c in batch:
            by_kind[c.kind].append(c)
        params_by_kind = {}
        for kind, items in by_kind.items():
            params = {
                "message_ids": [c.message_id for c in items],
                "attempts": [c.attempt for c in items],
            }
            if kind == RETRY:
                params["delays"] = [c.delay_ms for c in items]
                params["errors"] = [clean_text(c.error) for c in items]
            elif kind == DEAD:
                params["errors"] = [clean_text(c.error) for c in items]
                params["tracebacks"] = [clean_text(c.traceback) for c in items]
            params_by_kind[kind] = params

        def write(conn: sa.Connection) -> dict[str, int]:
            return {
                kind: conn.execute(q(kind), params).scalar_one()
                for kind, params in params_by_kind.items()
            }

        for kind, written in self._link.run(write).items():
            fenced = len(by_kind[kind]) - written
            if fenced and kind != REQUEUE:
                logger.warning(
                    "%d late %s outcome(s) fenced out: the message was released (this "
                    "worker's lease lapsed) or settled already.",
                    fenced,
                    kind,
                )
