"""The clock process: sends each periodic actor once per time slot.

Slots are deduplicated in the database (``nexus_clock_slots``), so several clocks running at
once -- a deploy overlapping the old release, or two dynos -- still fire each slot once.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
from dataclasses import dataclass

from . import db
from .common import now
from .errors import NexusError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    name: str
    every: dt.timedelta

    def slot(self, at: dt.datetime) -> dt.datetime:
        """Start of the slot that ``at`` falls in (slots are aligned to the epoch)."""
        period = self.every.total_seconds()
        epoch = at.timestamp()
        return dt.datetime.fromtimestamp(epoch - epoch % period, dt.UTC)


#: The schedule: actor name -> period.  Daily slots start at 00:00 UTC.
JOBS = (
    Job("cleanup_old_nexus_queue", dt.timedelta(days=1)),
    Job("sweep_stuck_rows", dt.timedelta(seconds=30)),
)


def tick(engine, send, jobs=JOBS, at: dt.datetime | None = None) -> list[str]:
    """Fire every job whose current slot no clock has fired yet; return the names fired.

    ``send(job_name, connection)`` enqueues the job's message on ``connection``: the slot and
    the message commit together, so a failed send leaves the slot free for the next tick.
    """
    at = at or now()
    fired = []
    for job in jobs:
        with db.transaction(engine) as conn:
            if db.claim_clock_slot(conn, job.name, job.slot(at)):
                send(job.name, conn)
                fired.append(job.name)
    return fired


def seconds_to_next_slot(jobs=JOBS, at: dt.datetime | None = None) -> float:
    at = at or now()
    return min((job.slot(at) + job.every - at).total_seconds() for job in jobs)


def main() -> int:
    import workers  # configures the broker from the environment
    from workers import periodic

    actors = {
        "cleanup_old_nexus_queue": periodic.cleanup_old_nexus_queue,
        "sweep_stuck_rows": periodic.sweep_stuck_rows,
    }
    from workers.resources import engine

    def send(name: str, conn) -> None:
        workers.broker.enqueue(actors[name].message(), connection=conn)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("clock started: %s", ", ".join(f"{j.name} every {j.every}" for j in JOBS))
    while not stop.is_set():
        try:
            for name in tick(engine(), send):
                log.info("fired %s", name)
        except NexusError as exc:
            log.warning("clock tick failed, retrying at the next wake-up: %s", exc)
        stop.wait(min(max(seconds_to_next_slot(), 0.05), 5.0))
    workers.broker.close()
    return 0
