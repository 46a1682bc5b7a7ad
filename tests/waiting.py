"""Waiting in tests: poll with a deadline, never sleep as synchronisation."""

import time
from collections.abc import Callable

import pytest

#: Seconds any wait may take before the test fails (a hang, not a speed target).
DEADLINE = 60.0
#: Seconds between two looks.
POLL = 0.02


def wait_for(predicate: Callable[[], object], what: str = "", timeout: float = DEADLINE):
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` seconds
    of wall time pass (the test fails)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what or predicate}")
        time.sleep(POLL)
