"""Where the workers' Prometheus metrics live, and Dramatiq's exposition server for them.

Dramatiq's Prometheus middleware writes from every worker process into one multiprocess
directory and serves it from a forked process of the ``dramatiq`` command.  Both read the
directory once, when ``dramatiq.middleware.prometheus`` is imported -- and the forked server
imports it in a process that never imported ``workers``.  So the directory is decided here, by
one function, before that import, in the worker processes and in the server alike:
``PROMETHEUS_MULTIPROC_DIR`` when set (``nexus run`` shares it with the web, whose /metrics
then shows the workers' metrics too), else Dramatiq's ``dramatiq_prom_db``, else Dramatiq's
default ``$TMPDIR/dramatiq-prometheus``.  The server listens on ``dramatiq_prom_host``
(default here 127.0.0.1, not Dramatiq's 0.0.0.0) : ``dramatiq_prom_port`` (default 9191).

Nothing here imports prometheus_client: importing this module changes nothing.
"""

from __future__ import annotations

import os
import tempfile

from . import config

#: Dramatiq's own default directory.
DRAMATIQ_DEFAULT_DIR = os.path.join(tempfile.gettempdir(), "dramatiq-prometheus")


def configure(settings: config.Settings | None = None) -> str:
    """Point prometheus_client and Dramatiq's middleware at the workers' directory (created
    if missing); returns it.  Call before either is imported."""
    settings = settings or config.load()
    shared = (
        settings.metrics_dir
        or os.environ.get("dramatiq_prom_db")  # noqa: SIM112  (Dramatiq spells it so)
        or DRAMATIQ_DEFAULT_DIR
    )
    os.makedirs(shared, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared
    os.environ["dramatiq_prom_db"] = shared  # noqa: SIM112
    os.environ.setdefault("dramatiq_prom_host", "127.0.0.1")  # noqa: SIM112
    return shared


def middleware(settings: config.Settings | None = None):
    """Dramatiq's Prometheus middleware, its exposition server forked through :func:`serve`."""
    configure(settings)
    from dramatiq.middleware.prometheus import Prometheus

    class _Prometheus(Prometheus):
        @property
        def forks(self):
            return [serve]

    return _Prometheus()


def serve() -> int:
    """Fork target of the ``dramatiq`` command: Dramatiq's exposition server, reading the
    directory the worker processes write."""
    configure()
    from dramatiq.middleware.prometheus import _run_exposition_server

    return _run_exposition_server()
