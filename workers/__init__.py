"""Dramatiq actors.  ``dramatiq workers`` imports this package: it configures the PostgreSQL
broker from the environment, then registers the actors.

A bad setting stops the process at start with one line naming the variable.
"""

import sys

import dramatiq

from nexus import config
from nexus.broker import PostgresBroker
from nexus.embedded import resolve_url
from nexus.errors import ConfigError

try:
    settings = config.load()
    broker = PostgresBroker(resolve_url(settings))
except ConfigError as exc:
    sys.exit(f"nexus: {exc}")

dramatiq.set_broker(broker)

from . import periodic, pipeline  # noqa: E402  (actors need the broker set first)

__all__ = ["broker", "periodic", "pipeline", "settings"]
