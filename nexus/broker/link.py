"""A background thread's own database connection, reopened after a failure."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa

T = TypeVar("T")


class Link:
    """One pooled connection kept by one thread, in autocommit mode.

    Every broker statement is a single fenced, idempotent statement, so none needs a
    transaction of its own: one round trip each.  After an error the connection is
    invalidated and the next call checks out a fresh one.
    """

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self._conn: sa.Connection | None = None

    def run(self, work: Callable[[sa.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            return work(self._conn)
        except sa.exc.SQLAlchemyError:
            self.close(invalidate=True)
            raise

    def close(self, *, invalidate: bool = False) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if invalidate:
                conn.invalidate()
            conn.close()
        except sa.exc.SQLAlchemyError:
            pass
