"""The worker's lease: registered once, renewed every second, and the reaping of dead workers."""

from __future__ import annotations

import logging
import os
import socket
import threading

import sqlalchemy as sa

from .link import Link
from .sql import q

logger = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Keeps this process's row in ``broker_workers`` alive and reaps the others.

    Every claim names the worker; its claims (running *and* prefetched messages) live as long
    as its lease, which this thread renews every ``interval_ms``.  A SIGKILLed process stops
    renewing, and any live worker's reaper releases its messages once the lease ran out.  A
    slow job is never taken away from a live worker: the lease does not depend on the job.
    The deadlines are computed by the database (``clock_timestamp()``).
    """

    def __init__(self, engine: sa.Engine, worker_id: str, *, lease_ms: int, interval_ms: int):
        super().__init__(name="nexus-broker-heartbeat", daemon=True)
        self.worker_id = worker_id
        self.lease_ms = lease_ms
        self.interval = interval_ms / 1000
        self.registered = threading.Event()
        self._link = Link(engine)
        self._stopping = threading.Event()
        self._failing = False

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)

    def unregister(self) -> None:
        """Give back every claim of this worker and forget it (a clean shutdown)."""
        self._link.run(lambda c: c.execute(q("unregister_worker"), {"worker_id": self.worker_id}))
        self._link.close()

    def run(self) -> None:
        while True:
            try:
                self.beat()
                if self._failing:
                    logger.info("Heartbeat restored.")
                self._failing = False
            except sa.exc.SQLAlchemyError as exc:
                if not self._failing:
                    logger.warning("Heartbeat failed: %s", str(exc).splitlines()[0])
                self._failing = True
            if self._stopping.wait(self.interval):
                return

    def beat(self) -> None:
        """Renew the lease (registering again if a reaper forgot us), then reap the dead."""
        params = {"worker_id": self.worker_id, "lease_ms": self.lease_ms}
        renewed = self.registered.is_set() and self._link.run(
            lambda c: c.execute(q("heartbeat"), params).rowcount
        )
        if not renewed:
            if self.registered.is_set():
                logger.warning("This worker's lease had expired; its claims may run again.")
            self._link.run(
                lambda c: c.execute(
                    q("register_worker"),
                    {**params, "hostname": socket.gethostname(), "pid": os.getpid()},
                )
            )
            self.registered.set()
        released = self._link.run(lambda c: c.execute(q("reap"), params).scalar_one())
        if released:
            logger.info("Released %d message(s) of workers whose lease expired.", released)
