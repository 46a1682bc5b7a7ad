"""Engines and the SQL the application runs, loaded by name from ``sql/queries.sql``.

This module owns database access: views, actors and the CLI call the functions here and never
build queries.  Driver errors that mean "the database is not there" are translated once, into
:class:`~nexus.errors.DatabaseUnavailable`.
"""

from __future__ import annotations

import contextlib
import re
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from .errors import DatabaseUnavailable

#: Where the SQL files live (the package is installed in editable mode from the checkout).
SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
#: Seconds libpq may take to open a connection (libpq's own default is to wait forever).
CONNECT_TIMEOUT = 2
#: Seconds to wait for a pooled connection; well under gunicorn's 30 s worker timeout.
POOL_TIMEOUT = 2.0

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def sqlalchemy_url(url: str | URL) -> URL:
    """``url`` with the psycopg2 driver named explicitly.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, which we do not install.
    """
    u = make_url(url)
    if u.drivername in ("postgres", "postgresql", "postgresql+psycopg2"):
        return u.set(drivername="postgresql+psycopg2")
    return u


def libpq_url(url: str | URL) -> str:
    """A plain ``postgresql://`` URL (what psycopg2 and child processes expect)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_database(url: str | URL, database: str) -> str:
    """The same server, another database."""
    return libpq_url(make_url(url).set(database=database))


def make_engine(
    url: str | URL,
    *,
    application_name: str = "nexus",
    pool_size: int = 5,
    max_overflow: int = 5,
    **kwargs,
) -> Engine:
    """An engine with bounded waits: connect and pool timeouts of about 2 s, pre-ping, and
    TCP keepalives so a vanished server is noticed."""
    connect_args = {
        "connect_timeout": CONNECT_TIMEOUT,
        "application_name": application_name,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }
    connect_args.update(kwargs.pop("connect_args", {}))
    return sa.create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=POOL_TIMEOUT,
        pool_pre_ping=True,
        connect_args=connect_args,
        **kwargs,
    )


def parse_queries(text: str) -> dict[str, str]:
    """Split a file of ``-- name: foo`` blocks into {name: sql}."""
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@cache
def queries() -> dict[str, sa.TextClause]:
    return {
        name: sa.text(sql)
        for name, sql in parse_queries((SQL_DIR / "queries.sql").read_text()).items()
    }


def q(name: str) -> sa.TextClause:
    """The named query from ``sql/queries.sql``."""
    return queries()[name]


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means the server cannot be reached or the connection was lost."""
    if isinstance(exc, sa.exc.TimeoutError):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
    return False


@contextlib.contextmanager
def translate_errors():
    """Turn driver errors meaning "no database" into :class:`DatabaseUnavailable`."""
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        if is_unavailable(exc):
            raise DatabaseUnavailable(str(exc.orig if hasattr(exc, "orig") else exc)) from exc
        raise
