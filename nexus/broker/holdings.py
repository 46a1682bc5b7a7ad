"""What this process holds claimed, until the outcome of each message is written."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable


class Holdings:
    """Message ids claimed by this process and not yet settled in the database, per queue.

    A message stays here from its claim until its ack, retry, dead letter or requeue has been
    committed.  After a claim whose outcome is unknown (the connection died around its commit),
    whatever the database says this worker holds on the queue but is not listed here was
    claimed without our knowing, and is given back.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_queue: defaultdict[str, set[str]] = defaultdict(set)

    def add(self, queue_name: str, message_ids: Iterable[str]) -> None:
        with self._lock:
            self._by_queue[queue_name].update(message_ids)

    def discard(self, queue_name: str, message_id: str) -> None:
        with self._lock:
            self._by_queue[queue_name].discard(message_id)

    def snapshot(self, queue_name: str) -> list[str]:
        with self._lock:
            return list(self._by_queue[queue_name])
