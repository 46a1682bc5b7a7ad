"""gunicorn settings for the web process (the Procfile's ``--config python:nexus.gunicorn_conf``).

prometheus_client's multiprocess mode, so every gunicorn worker counts into one place and
/metrics shows the sum, not whichever worker answered (a counter that jumps between workers'
values looks to Prometheus like a reset each time).  Without ``PROMETHEUS_MULTIPROC_DIR`` the
master makes a fresh directory before forking the workers, which inherit it, and removes it
at exit.  The master never imports prometheus_client itself: the forked workers would inherit
a module already set up without the directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_made: list[str] = []


def on_starting(server) -> None:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        path = tempfile.mkdtemp(prefix="nexus-web-prom-")
        _made.append(path)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def child_exit(server, worker) -> None:
    """A worker's live gauges stop counting when it exits (counters stay, as they should)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    for path in _made:
        shutil.rmtree(path, ignore_errors=True)
