"""The worker's lease: registered once, renewed every second, and the reaping of dead workers."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

import sqlalchemy as sa

from .lease import Lease, monotonic
from .link import Link
from .sql import q
from .watchdog import GuardedThread

logger = logging.getLogger(__name__)


class Heartbeat(GuardedThread):
    """Keeps this process's row in ``broker_workers`` alive and reaps the others.

    Every claim names the worker; its claims (running *and* prefetched messages) live as long
    as its lease, which this thread renews every ``interval_ms``.  A SIGKILLed process stops
    renewing, and any live worker's reaper releases its messages once the lease ran out.  A
    slow job is never taken away from a live worker: the lease does not depend on the job.
    The deadlines are computed by the database (``clock_timestamp()``).

    Each renewal is noted in ``lease`` (monotonic clock).  When a renewal finds that the
    lease may have lapsed meanwhile (the process was stopped or starved of the GIL, or the
    database was away), or that a reaper forgot this worker, ``on_lapse()`` is called first:
    the consumers give back the messages they prefetched, which may be claimed elsewhere now.
    """

    def __init__(
        self,
        engine: sa.Engine,
        worker_id: str,
        *,
        lease: Lease,
        lease_ms: int,
        interval_ms: int,
        on_lapse: Callable[[], None] = lambda: None,
        on_death=None,
    ):
        super().__init__("nexus-broker-heartbeat", on_death)
        self.worker_id = worker_id
        self.lease = lease
        self.lease_ms = lease_ms
        self.interval = interval_ms / 1000
        self.on_lapse = on_lapse
        self.registered = threading.Event()
        self._link = Link(engine)
        self._stopping = threading.Event()
        self._failing = False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop renewing.  The thread's connection is closed by the thread itself (never from
        here: a statement of its may still be running)."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)

    def work(self) -> None:
        try:
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
        finally:
            self._link.close()

    def beat(self) -> None:
        """Renew the lease (registering again if a reaper forgot us), then reap the dead."""
        params = {"worker_id": self.worker_id, "lease_ms": self.lease_ms}
        sent_at = monotonic()
        was_valid = self.lease.valid(sent_at)
        renewed = self.registered.is_set() and self._link.run(
            lambda c: c.execute(q("heartbeat"), params).rowcount
        )
        if not renewed or not was_valid:
            if self.registered.is_set():
                logger.warning(
                    "This worker's lease may have lapsed; giving back its prefetched messages "
                    "(the running ones may run again elsewhere)."
                )
                self.lease.lapse()
                self.on_lapse()
            if not renewed:
                self._link.run(
                    lambda c: c.execute(
                        q("register_worker"),
                        {**params, "hostname": socket.gethostname(), "pid": os.getpid()},
                    )
                )
        self.lease.renewed(sent_at)
        self.registered.set()
        released = self._link.run(lambda c: c.execute(q("reap"), params).scalar_one())
        if released:
            logger.info("Released %d message(s) of workers whose lease expired.", released)
