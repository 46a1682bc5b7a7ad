"""What this worker knows of its own lease, on the monotonic clock."""

from __future__ import annotations

import threading
import time


def monotonic() -> float:
    """Seconds on the system's monotonic clock, read directly: time.monotonic() is frozen by
    freezegun in tests, and a frozen clock must not stop leases."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class Lease:
    """When the worker's lease was last renewed, as this process saw it.

    The heartbeat notes the monotonic time at which it *sent* each successful renewal; the
    database set the lease to its own clock at execution plus ``lease_ms``, which is later, so
    ``now - renewed_at >= lease`` is a conservative "the lease may have lapsed".  Past that
    point other workers' reapers may release this worker's claims, so a prefetched message is
    no longer handed to a thread.

    ``epoch`` counts the lapses seen by the heartbeat: a message claimed in an earlier epoch
    may have been released and claimed elsewhere meanwhile, so it is given back unstarted.
    """

    def __init__(self, lease_ms: int):
        self.seconds = lease_ms / 1000
        self.epoch = 0
        self._renewed_at: float | None = None
        self._lock = threading.Lock()

    def valid(self, now: float | None = None) -> bool:
        renewed_at = self._renewed_at
        if renewed_at is None:
            return False
        return (monotonic() if now is None else now) - renewed_at < self.seconds

    def holds(self, epoch: int) -> bool:
        """May a message claimed in ``epoch`` still be started?"""
        return epoch == self.epoch and self.valid()

    def renewed(self, sent_at: float) -> None:
        with self._lock:
            if self._renewed_at is None or sent_at > self._renewed_at:
                self._renewed_at = sent_at

    def lapse(self) -> None:
        """The lease may have lapsed: every claim made so far is suspect."""
        with self._lock:
            self.epoch += 1
            self._renewed_at = None
