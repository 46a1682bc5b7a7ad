"""A background thread's own database connection, reopened after a failure."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import psycopg2
import sqlalchemy as sa

T = TypeVar("T")


class Link:
    """One pooled connection kept by one thread.

    Every broker statement is a single fenced, idempotent statement, so none needs a
    transaction of its own: on the broker's autocommit engine, one round trip each (the
    commit below is then a no-op).  After an error the connection is invalidated and the next
    call checks out a fresh one.
    """

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self._conn: sa.Connection | None = None

    def run(self, work: Callable[[sa.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self.engine.connect()
        try:
            result = work(self._conn)
            self._conn.commit()
            return result
        except sa.exc.SQLAlchemyError:
            self.close(invalidate=True)
            raise
        except psycopg2.Error as exc:  # raw: SQLAlchemy resetting a connection that died
            self.close(invalidate=True)
            raise sa.exc.OperationalError(None, None, exc) from exc

    def close(self, *, invalidate: bool = False) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if invalidate:
                conn.invalidate()
            conn.close()
        except (sa.exc.SQLAlchemyError, psycopg2.Error):
            pass
