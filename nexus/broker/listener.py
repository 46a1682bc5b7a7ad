"""One LISTEN connection per process, waking the consumers of the notified queue."""

from __future__ import annotations

import logging
import os
import select
import threading
from collections import defaultdict

import psycopg2

from .. import connection
from ..db import libpq_url
from .sql import CHANNEL
from .watchdog import GuardedThread

logger = logging.getLogger(__name__)

#: Seconds between liveness probes of an idle LISTEN connection (a silent network drop is
#: otherwise only noticed by TCP keepalives).
PROBE_INTERVAL = 5.0
#: Seconds between reconnection attempts, doubling up to the maximum.
MIN_RECONNECT_DELAY = 0.05
MAX_RECONNECT_DELAY = 2.0


class Listener(GuardedThread):
    """LISTENs on :data:`~nexus.broker.sql.CHANNEL` on an autocommit connection of its own
    and sets the events subscribed for the notified queue.

    Nothing else ever uses this connection.  Whenever it (re)connects, it LISTENs first and
    then wakes every subscriber, so that a notification sent while it was away is made up for
    by a sweep.  While it is disconnected, :attr:`connected` is clear and consumers poll.
    """

    def __init__(self, url: str, *, application_name: str = "nexus-broker-listener", on_death=None):
        super().__init__("nexus-broker-listener", on_death)
        self.dsn = libpq_url(url)
        self.application_name = application_name
        self.connected = threading.Event()
        self._stopping = threading.Event()
        self._stop_r, self._stop_w = os.pipe()  # wakes select() on stop
        self._lock = threading.Lock()
        self._subscribers: defaultdict[str, set[threading.Event]] = defaultdict(set)

    def subscribe(self, queue_name: str, event: threading.Event) -> None:
        with self._lock:
            self._subscribers[queue_name].add(event)

    def unsubscribe(self, queue_name: str, event: threading.Event) -> None:
        with self._lock:
            self._subscribers[queue_name].discard(event)

    def stop(self, timeout: float = 5.0) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        os.write(self._stop_w, b"x")
        if self.is_alive():
            self.join(timeout)
        for fd in (self._stop_r, self._stop_w):
            os.close(fd)

    def work(self) -> None:
        delay = MIN_RECONNECT_DELAY
        while not self._stopping.is_set():
            conn = None
            try:
                conn = self._connect()
                delay = MIN_RECONNECT_DELAY
                self.connected.set()
                self._wake_all()
                self._listen(conn)
            except (psycopg2.Error, OSError) as exc:
                if self.connected.is_set():
                    logger.warning(
                        "Lost the LISTEN connection (%s); reconnecting.", _first_line(exc)
                    )
                self.connected.clear()
                self._wake_all()
                self._stopping.wait(delay)
                delay = min(delay * 2, MAX_RECONNECT_DELAY)
            finally:
                self.connected.clear()
                if conn is not None:
                    try:
                        conn.close()
                    except psycopg2.Error:
                        pass

    def _connect(self):
        conn = connection.connect(self.dsn, self.application_name)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"LISTEN {CHANNEL}")
        return conn

    def _listen(self, conn) -> None:
        idle = 0.0
        while not self._stopping.is_set():
            readable, _, _ = select.select([conn, self._stop_r], [], [], 1.0)
            if conn in readable:
                idle = 0.0
                conn.poll()
                while conn.notifies:
                    self._wake(conn.notifies.pop(0).payload)
                continue
            idle += 1.0
            if idle >= PROBE_INTERVAL:
                idle = 0.0
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")

    def _wake(self, queue_name: str) -> None:
        with self._lock:
            events = list(self._subscribers.get(queue_name, ()))
        for event in events:
            event.set()

    def _wake_all(self) -> None:
        with self._lock:
            events = [e for subscribed in self._subscribers.values() for e in subscribed]
        for event in events:
            event.set()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
