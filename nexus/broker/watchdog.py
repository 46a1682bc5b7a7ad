"""No silent thread death: a broker thread that dies takes its worker process with it."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

#: Exit status of a worker process whose listener, heartbeat or outcome writer died
#: (EX_SOFTWARE).  Its supervisor restarts it; its claims are released with its lease.
EXIT_THREAD_DIED = 70


def exit_process(thread: threading.Thread, exc: BaseException) -> None:
    """The default reaction to a dead broker thread: log, then ``os._exit`` at once.

    A half-working worker (claiming and running messages whose outcomes are never written,
    its heartbeat holding them claimed) is worse than none: exiting lets the lease release
    its claims and the supervisor start a whole one.  ``os._exit``, not ``sys.exit``: this
    runs on the dying thread, and nothing else of the process may keep it alive."""
    logger.critical(
        "Broker thread %s died (%s: %s); exiting with status %d so the worker is restarted.",
        thread.name,
        type(exc).__name__,
        exc,
        EXIT_THREAD_DIED,
        exc_info=exc,
    )
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001  (nothing may stop the exit)
            pass
    sys.stderr.flush()
    os._exit(EXIT_THREAD_DIED)


class GuardedThread(threading.Thread):
    """A daemon thread whose body is :meth:`work`; an exception escaping it calls
    ``on_death(thread, exc)`` (by default :func:`exit_process`).  Returning from
    :meth:`work` is a normal stop."""

    def __init__(
        self, name: str, on_death: Callable[[threading.Thread, BaseException], None] | None
    ):
        super().__init__(name=name, daemon=True)
        self.on_death = on_death or exit_process

    def run(self) -> None:
        try:
            self.work()
        except BaseException as exc:
            self.on_death(self, exc)
            raise

    def work(self) -> None:
        raise NotImplementedError
