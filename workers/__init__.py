"""Dramatiq actors.  ``dramatiq workers`` imports this package: it configures the PostgreSQL
broker from the environment, then registers the actors.

A bad setting stops the process at start with one line naming the variable.
"""

import signal
import sys
import time

import dramatiq

from nexus import config, worker_metrics
from nexus.broker import PostgresBroker
from nexus.embedded import resolve_url
from nexus.errors import ConfigError

try:
    settings = config.load()
    broker = PostgresBroker(resolve_url(settings))
except ConfigError as exc:
    sys.exit(f"nexus: {exc}")

dramatiq.set_broker(broker)

# Dramatiq's Prometheus middleware and nexus's worker metrics, in one directory (see
# nexus.worker_metrics); set up before prometheus_client is first imported.
broker.add_middleware(worker_metrics.middleware(settings))

#: Seconds within which a repeated SIGTERM counts as the same stop request.
SIGTERM_ECHO_S = 2.0


def _ignore_sigterm_echo() -> None:
    """honcho and Heroku signal a dyno's whole process group, and dramatiq's main process
    forwards that SIGTERM to its worker processes too, so each worker process receives two
    at once -- and dramatiq takes a second SIGTERM as "kill now", dropping in-flight jobs
    instead of finishing them.  In a worker process, a SIGTERM right after the first is
    ignored; a later one still kills."""
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return
    first: list[float] = []

    def handler(signum, frame):
        now = time.monotonic()
        if first and now - first[0] < SIGTERM_ECHO_S:
            return
        first[:] = [now]
        previous(signum, frame)

    signal.signal(signal.SIGTERM, handler)


_ignore_sigterm_echo()

from . import periodic, pipeline  # noqa: E402  (actors need the broker set first)

__all__ = ["broker", "periodic", "pipeline", "settings"]
