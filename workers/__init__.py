"""Dramatiq actors.  ``dramatiq workers`` imports this package: it configures the PostgreSQL
broker from the environment, then registers the actors.

A bad setting stops the process at start with one line naming the variable.
"""

import os
import signal
import sys
import tempfile
import time

import dramatiq

from nexus import config
from nexus.broker import PostgresBroker
from nexus.embedded import resolve_url
from nexus.errors import ConfigError

try:
    settings = config.load()
    broker = PostgresBroker(resolve_url(settings))
except ConfigError as exc:
    sys.exit(f"nexus: {exc}")

dramatiq.set_broker(broker)


def _export_metrics() -> None:
    """Dramatiq's Prometheus middleware (its own exposition server: one forked process per
    ``dramatiq`` command, on ``dramatiq_prom_host``:``dramatiq_prom_port``, default here
    127.0.0.1:9191) and nexus's worker metrics share one multiprocess directory:
    ``PROMETHEUS_MULTIPROC_DIR`` when set (``nexus run`` shares it with the web, whose /metrics
    then shows the workers' metrics too), else Dramatiq's ``dramatiq_prom_db`` (default
    ``$TMPDIR/dramatiq-prometheus``).  Set before prometheus_client is first imported, which
    reads it once."""
    shared = (
        settings.metrics_dir
        or os.environ.get("dramatiq_prom_db")  # noqa: SIM112  (Dramatiq spells it so)
        or os.path.join(tempfile.gettempdir(), "dramatiq-prometheus")
    )
    os.makedirs(shared, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared
    os.environ["dramatiq_prom_db"] = shared  # noqa: SIM112
    os.environ.setdefault("dramatiq_prom_host", "127.0.0.1")
    from dramatiq.middleware.prometheus import Prometheus

    broker.add_middleware(Prometheus())


_export_metrics()

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
