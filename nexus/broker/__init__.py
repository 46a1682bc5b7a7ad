"""A Dramatiq broker backed by PostgreSQL.

    from nexus.broker import PostgresBroker
    broker = PostgresBroker(database_url, max_retries=5, min_backoff=2_000, max_backoff=300_000)
    dramatiq.set_broker(broker)

See :class:`PostgresBroker` for the API, ``sql/migrations/0002_broker.sql`` for the tables and
``sql/broker.sql`` for every query it runs.
"""

from .broker import HEARTBEAT_MS, LEASE_MS, DeadLetter, PostgresBroker
from .consumer import PostgresMessage
from .retries import Retries, backoff_ms

__all__ = [
    "HEARTBEAT_MS",
    "LEASE_MS",
    "DeadLetter",
    "PostgresBroker",
    "PostgresMessage",
    "Retries",
    "backoff_ms",
]
