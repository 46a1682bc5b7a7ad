"""Fixtures of the broker tests: an in-process broker and worker, and real ``dramatiq``
worker subprocesses running :mod:`tests.broker.actors`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import dramatiq
import psycopg2
import pytest

from nexus import db
from nexus.broker import PostgresBroker
from tests.waiting import DEADLINE, wait_for

CHECKOUT = Path(__file__).resolve().parents[2]

RUNS_TABLE = """
CREATE TABLE IF NOT EXISTS broker_test_runs (
    id      bigserial PRIMARY KEY,
    key     text NOT NULL,
    event   text NOT NULL,
    pid     integer NOT NULL,
    retries integer NOT NULL DEFAULT 0,
    at      timestamptz NOT NULL DEFAULT clock_timestamp()
)"""


def sql(url: str, statement: str, params=None) -> list[tuple]:
    """Run one statement on its own autocommit connection; the rows it returns."""
    conn = psycopg2.connect(db.libpq_url(url), connect_timeout=2)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


@pytest.fixture
def broker(db_url: str) -> Iterator[PostgresBroker]:
    """A broker with fast retries, declared actors dropped at the end.  A broker thread that
    dies fails the test (instead of exiting the test process, as it would a worker)."""
    b = PostgresBroker(db_url, max_retries=3, min_backoff=20, max_backoff=200)
    deaths: list[str] = []
    b.on_thread_death = lambda thread, exc: deaths.append(f"{thread.name}: {exc!r}")
    dramatiq.set_broker(b)
    yield b
    b.close()
    assert not deaths, f"broker threads died: {deaths}"


@pytest.fixture
def worker(broker: PostgresBroker) -> Iterator[dramatiq.Worker]:
    """An in-process Dramatiq worker (4 threads) on ``broker``; stopped at the end."""
    w = dramatiq.Worker(broker, worker_timeout=100, worker_threads=4)
    w.start()
    yield w
    w.stop()


@pytest.fixture
def runs_db(db_url: str) -> str:
    """``db_url`` with the table the actors of :mod:`tests.broker.actors` record runs in."""
    sql(db_url, RUNS_TABLE)
    return db_url


class WorkerProcess:
    """``python -m dramatiq tests.broker.actors -p 1 -t N`` against a database."""

    def __init__(self, url: str, threads: int, log: Path, env: dict[str, str] | None = None):
        self.url, self.threads, self.log = url, threads, log
        self.env = {
            **os.environ,
            "PYTHONPATH": str(CHECKOUT),
            "DATABASE_URL": db.libpq_url(url),
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dramatiq", "tests.broker.actors", "-p", "1"]
                + ["-t", str(self.threads), "--worker-shutdown-timeout", "10000"],
                env=self.env,
                cwd=CHECKOUT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def children(self) -> list[int]:
        """PIDs of the dramatiq worker processes (children of the CLI's main process)."""
        try:
            tasks = Path(f"/proc/{self.proc.pid}/task")
            return [int(p) for t in tasks.iterdir() for p in (t / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            return []

    def wait_ready(self, timeout: float = DEADLINE) -> int:
        """Wait until the worker process registered its lease; its pid."""

        def registered():
            pids = set(self.children())
            rows = sql(self.url, "SELECT pid FROM broker_workers")
            return next((pid for (pid,) in rows if pid in pids), None)

        return wait_for(registered, f"worker {self.proc.pid} to register", timeout)

    def kill_worker(self) -> None:
        """SIGKILL the worker process (its CLI parent then shuts down)."""
        for pid in self.children():
            os.kill(pid, signal.SIGKILL)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (a graceful shutdown), then SIGKILL after ``timeout`` s; the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def worker_processes(tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``dramatiq`` worker subprocesses: ``start(url, threads=8, **env)``.  All are
    stopped (SIGTERM, then SIGKILL) at the end; their output is shown if the test failed."""
    started: list[WorkerProcess] = []

    def start(url: str, threads: int = 8, **env: str) -> WorkerProcess:
        wp = WorkerProcess(url, threads, tmp_path / f"worker{len(started)}.log", env).start()
        started.append(wp)
        return wp

    yield start
    for wp in started:
        wp.terminate()
    for wp in started:
        wp.stop()
        if wp.proc.returncode not in (0, None, -9):
            sys.stderr.write(wp.output()[-5000:])
