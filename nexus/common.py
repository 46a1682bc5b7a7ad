"""Small helpers shared by every module.  Time flows through :func:`now` so tests can freeze it."""

import datetime as dt


def now() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)
