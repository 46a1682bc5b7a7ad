"""``make smoke``: the whole system end to end on a fresh database.

Creates a throwaway database (on ``DATABASE_URL``'s server, or on an embedded server), migrates
it, starts web (gunicorn), worker (dramatiq) and clock as real processes, POSTs the seed's
sample conversation, waits for ``completed``, prints the queue row, the prospect row and the
POST-to-completed time, then stops everything it started and drops its database.  It never
touches data it did not create.  :class:`Stack` is reused by ``bench/e2e.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import psycopg2.extras

from . import config, connection, db, migrations
from .embedded import CHECKOUT, database

SAMPLE = [
    {"role": "user", "content": "Hola, me llamo Juan Pérez"},
    {"role": "assistant", "content": "Hola Juan, ¿en qué puedo ayudarte?"},
    {"role": "user", "content": "Quiero saber sobre las oportunidades de inversión"},
]
EXPECTED_NAME = "Juan Pérez"
#: Seconds to wait for the web process to answer, and for the row to complete.
START_TIMEOUT = 60.0
COMPLETE_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def throwaway_database(server_url: str, prefix: str = "nexus_smoke"):
    """A new database on ``server_url``'s server, migrated; dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    db.execute_autocommit(server_url, f'CREATE DATABASE "{name}"')
    try:
        url = db.with_database(server_url, name)
        migrations.upgrade(url)
        yield url
    finally:
        db.execute_autocommit(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Stack:
    """web + worker + clock as the Procfile runs them, on one database."""

    def __init__(self, url: str, *, worker_threads: int = 8, web_workers: int = 2, env=None):
        self.url = url
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        bin_dir = str(Path(sys.executable).parent)
        self.env = {k: v for k, v in os.environ.items() if k not in config.VARIABLES}
        self.env.update(env or {})
        self.env.update(
            DATABASE_URL=url,
            PORT=str(self.port),
            PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""),
            PYTHONUNBUFFERED="1",
        )
        self.commands = {
            "web": [
                "gunicorn",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(web_workers),
                "--threads",
                "4",
                "--log-level",
                "warning",
                "--no-control-socket",
                "nexus.web:create_app()",
            ],
            "worker": ["dramatiq", "workers", "--processes", "1", "--threads", str(worker_threads)],
            "clock": ["nexus", "clock"],
        }
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        for name, cmd in self.commands.items():
            log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115 - owned by the child
            self.procs[name] = subprocess.Popen(
                cmd, env=self.env, cwd=CHECKOUT, stdout=log, stderr=subprocess.STDOUT
            )
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited at start-up; see {log_dir}/{name}.log")
            try:
                with urllib.request.urlopen(self.base + "/api/nexus/producer", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"web did not answer within {START_TIMEOUT:.0f}s")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def post(self, body: dict) -> dict:
        req = urllib.request.Request(
            self.base + "/api/nexus/producer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())


def wait_completed(conn, queue_id: str, timeout: float = COMPLETE_TIMEOUT, poll: float = 0.002):
    """Poll the row until it is completed or failed (or the deadline passes)."""
    deadline = time.monotonic() + timeout
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        while True:
            cur.execute("SELECT status FROM nexus_queue WHERE id = %s", (queue_id,))
            status = cur.fetchone()["status"]
            if status in ("completed", "failed") or time.monotonic() > deadline:
                return status
            time.sleep(poll)


def main() -> int:
    settings = config.load()
    with database(settings, "smoke") as server_url, throwaway_database(server_url) as url:
        stack = Stack(url)
        log_dir = CHECKOUT / ".pgdata" / "smoke-logs"
        try:
            stack.start(log_dir)
            session = f"smoke-{uuid.uuid4().hex[:8]}"
            started = time.perf_counter()
            accepted = stack.post(
                {"messages": SAMPLE, "sessionId": session, "fingerprint": f"fp-{session}"}
            )
            conn = connection.connect(db.libpq_url(url), "nexus-smoke")
            conn.autocommit = True
            status = wait_completed(conn, accepted["queueId"])
            elapsed_ms = (time.perf_counter() - started) * 1000
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute("SELECT * FROM nexus_queue WHERE id = %s", (accepted["queueId"],))
                row = cur.fetchone()
                cur.execute(
                    "SELECT * FROM prospect_data WHERE fingerprint_id = %s", (row["fingerprint"],)
                )
                prospect = cur.fetchone()
            conn.close()
        finally:
            stack.stop()
    print("queue row:")
    print(json.dumps(row, indent=2, default=str, ensure_ascii=False))
    print("prospect row:")
    print(json.dumps(prospect, indent=2, default=str, ensure_ascii=False))
    print(f"POST-to-completed: {elapsed_ms:.1f} ms (status {status})")
    if status == "completed" and prospect and prospect["nombre"] == EXPECTED_NAME:
        print(f"smoke: OK -- {EXPECTED_NAME} extracted and merged")
        return 0
    print(f"smoke: FAILED -- status {status}, prospect {prospect and prospect['nombre']!r}")
    print(f"logs: {log_dir}")
    return 1
