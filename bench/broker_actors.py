"""Actors of the broker benchmark, for either broker (``BENCH_BROKER`` = nexus or
dramatiq-postgres), run by ``python -m dramatiq broker_actors`` with ``bench/`` on the path.

Each start is appended to ``BENCH_LOG`` as ``<key> <pid> <unix time>`` with one O_APPEND
write (a few microseconds), so both brokers pay the same for being measured.
"""

from __future__ import annotations

import os
import threading
import time

import dramatiq

KIND = os.environ["BENCH_BROKER"]
URL = os.environ["DATABASE_URL"]
LOG = os.environ["BENCH_LOG"]


def make_broker(kind: str, url: str) -> dramatiq.Broker:
    """Each broker at its defaults (results off for the peer: a no-op returns nothing)."""
    if kind == "nexus":
        from nexus.broker import PostgresBroker

        return PostgresBroker(url)
    from dramatiq_postgres import PostgresBroker

    return PostgresBroker(url=url, results=False)


broker = make_broker(KIND, URL)
dramatiq.set_broker(broker)
_fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def log(key: str) -> None:
    os.write(_fd, f"{key} {os.getpid()} {time.time():.6f}\n".encode())


@dramatiq.actor(max_retries=0)
def noop(key: str) -> None:
    log(key)


@dramatiq.actor(max_retries=0)
def hang(key: str) -> None:
    """Blocks forever on its first delivery (the worker is SIGKILLed meanwhile)."""
    with open(LOG) as f:
        first = not any(line.split()[0] == key for line in f if line.strip())
    log(key)
    if first:
        threading.Event().wait()
