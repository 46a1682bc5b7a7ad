"""Retries with exponential backoff and jitter, rescheduled in place by the broker.

Dramatiq's own ``Retries`` middleware enqueues a copy of the failed message (same id) and the
worker then acks the original; with a database broker that is two writes that can disagree (a
swallowed enqueue error loses the message).  This middleware only *decides*: it writes its
verdict on the message proxy, and the consumer's ack turns it into one fenced UPDATE of the
same row (new due time, claim released, ``retries + 1``) or a move to the dead letters.
"""

from __future__ import annotations

import logging
import random
import traceback
from collections.abc import Callable

import dramatiq
from dramatiq.errors import Retry
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)

#: Retries after the first attempt, unless the actor or message says otherwise.
DEFAULT_MAX_RETRIES = 20
#: Backoff bounds in milliseconds (Dramatiq's own defaults: 15 s and 7 days).
DEFAULT_MIN_BACKOFF = 15_000
DEFAULT_MAX_BACKOFF = 7 * 86_400_000
#: Characters of an error message and of a traceback kept with a message.
ERROR_LIMIT = 2_000
TRACEBACK_LIMIT = 8_000


def backoff_ms(retries: int, min_backoff: int, max_backoff: int, rng=random) -> int:
    """Delay before retry number ``retries + 1``: drawn uniformly from
    ``[min_backoff * 2**retries, 2 * that]`` and capped at ``max_backoff`` (milliseconds).

    The floor keeps every delay at least ``min_backoff``; the jitter spreads workers that
    failed together (a rate limit, an outage) so they do not come back together.
    """
    base = min_backoff * 2 ** min(retries, 62)
    if base >= max_backoff:
        return max_backoff
    return int(min(max_backoff, rng.uniform(base, 2 * base)))


def describe(exc: BaseException) -> tuple[str, str]:
    """``(error, traceback)`` of an exception, trimmed to what a database row should keep."""
    error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=30))
    return error[:ERROR_LIMIT], tb[-TRACEBACK_LIMIT:]


class Retries(Middleware):
    """Decides what becomes of a failed message.  Same options as Dramatiq's ``Retries``
    (``max_retries``, ``min_backoff``, ``max_backoff`` in ms, ``retry_when``, ``throws``,
    ``on_retry_exhausted``), read from the message's options, then the actor's, then these
    defaults.  An exception listed in ``throws`` dead-letters the message at once; raising
    ``dramatiq.Retry(delay=ms)`` retries after exactly that delay.

    The number of failed attempts so far is ``message.options["retries"]`` while the actor
    runs (see ``dramatiq.middleware.CurrentMessage``), so an actor can tell its last attempt.
    """

    def __init__(
        self,
        *,
        max_retries: int = DEFAULT_MAX_RETRIES,
        min_backoff: int = DEFAULT_MIN_BACKOFF,
        max_backoff: int = DEFAULT_MAX_BACKOFF,
        retry_when: Callable[[int, BaseException], bool] | None = None,
    ):
        if min_backoff < 0 or max_backoff < min_backoff:
            raise ValueError("backoff bounds must satisfy 0 <= min_backoff <= max_backoff")
        self.max_retries = max_retries
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.retry_when = retry_when

    @property
    def actor_options(self) -> set[str]:
        return {
            "max_retries",
            "min_backoff",
            "max_backoff",
            "retry_when",
            "throws",
            "on_retry_exhausted",
        }

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if exception is None:
            return
        actor = broker.get_actor(message.actor_name)

        def option(name, default=None):
            return message.options.get(name, actor.options.get(name, default))

        error, tb = describe(exception)
        message.error, message.traceback = error, tb

        throws = option("throws")
        if throws and isinstance(exception, throws):
            logger.info("Message %s raised %s, listed in throws: dead-lettered.", message, error)
            message.fail()
            return

        retries = message.options.get("retries", 0)
        max_retries = option("max_retries", self.max_retries)
        retry_when = option("retry_when", self.retry_when)
        if retry_when is not None:
            again = retry_when(retries, exception)
        else:
            again = max_retries is None or retries < max_retries
        if not again:
            logger.warning("Retries exceeded for message %s: dead-lettered.", message)
            message.fail()
            target = option("on_retry_exhausted")
            if target:
                broker.get_actor(target).send(
                    message.asdict(), {"retries": retries, "max_retries": max_retries}
                )
            return

        if isinstance(exception, Retry) and exception.delay is not None:
            delay = max(0, int(exception.delay))
        else:
            delay = backoff_ms(
                retries,
                option("min_backoff", self.min_backoff),
                option("max_backoff", self.max_backoff),
            )
        logger.info("Retrying message %s in %d ms.", message, delay)
        message.retry_in_ms = delay


def replace_dramatiq_retries(middleware: Middleware) -> Middleware:
    """Our :class:`Retries` in place of Dramatiq's (keeping its settings), else ``middleware``."""
    if isinstance(middleware, dramatiq.middleware.Retries):
        return Retries(
            max_retries=middleware.max_retries,
            min_backoff=middleware.min_backoff,
            max_backoff=middleware.max_backoff,
            retry_when=middleware.retry_when,
        )
    return middleware
