"""Engines and the SQL the application runs, loaded by name from ``sql/queries.sql``.

This module owns database access: views, actors and the CLI call the functions here and never
build queries.  Driver errors that mean "the database is not there" are translated once, into
:class:`~nexus.errors.DatabaseUnavailable`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from . import connection
from .connection import RUNTIME, Bounds
from .errors import DatabaseError, DatabaseUnavailable

#: Where the SQL files live (the package is installed in editable mode from the checkout).
SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
#: Seconds libpq may take to open a connection (see :mod:`nexus.connection`).
CONNECT_TIMEOUT = connection.CONNECT_TIMEOUT
#: Seconds to wait for a pooled connection; well under gunicorn's 30 s worker timeout.
POOL_TIMEOUT = 2.0

log = logging.getLogger(__name__)

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


def execute_autocommit(url: str | URL, statement: str) -> None:
    """Run one statement outside a transaction (``CREATE DATABASE``, ``DROP DATABASE``), with
    the migrations' longer statement and lock timeouts (copying a template takes a while)."""
    conn = connection.connect(libpq_url(url), "nexus-admin", connection.MIGRATION)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def make_engine(
    url: str | URL,
    *,
    application_name: str = "nexus",
    pool_size: int = 5,
    max_overflow: int = 5,
    role: str | None = None,
    bounds: Bounds = RUNTIME,
    **kwargs,
) -> Engine:
    """An engine whose every wait is bounded (:mod:`nexus.connection`): connect, statement,
    lock, idle-in-transaction, TCP and client-side deadlines; a pool timeout of 2 s and a
    pre-ping that is itself bounded.

    ``role``: every new connection runs ``SET ROLE role`` when the login user may (is a
    member), so the process has that role's privileges only, whatever ``DATABASE_URL`` logs
    in as -- once per connection, not per request.
    """
    connect_args = connection.connect_args(application_name, bounds)
    connect_args.update(kwargs.pop("connect_args", {}))
    engine = sa.create_engine(
        sqlalchemy_url(url),
        # Error messages and tracebacks end up in logs and dead letters: keep the
        # parameters (conversations, names, phones) out of them.
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=POOL_TIMEOUT,
        pool_pre_ping=True,
        connect_args=connect_args,
        **kwargs,
    )
    if role is not None:
        sa.event.listen(engine, "connect", _assume_role(role))
    return engine


def _assume_role(role: str):
    # The raw driver's cursor takes pyformat parameters.
    statement = re.sub(r"(?<!:):(\w+)", r"%(\1)s", queries_text()["assume_role"])

    def on_connect(dbapi_conn, _record) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute(statement, {"role": role})
            assumed = cur.fetchone()[0]
        dbapi_conn.commit()  # SET ROLE inside a transaction rolled back would be undone
        if not assumed:
            log.warning(
                "The database user may not SET ROLE %s: this process runs with the login "
                "user's own privileges (see README, Roles).",
                role,
            )

    return on_connect


def parse_queries(text: str) -> dict[str, str]:
    """Split a file of ``-- name: foo`` blocks into {name: sql}."""
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@cache
def queries_text() -> dict[str, str]:
    return parse_queries((SQL_DIR / "queries.sql").read_text())


@cache
def queries() -> dict[str, sa.TextClause]:
    return {name: sa.text(sql) for name, sql in queries_text().items()}


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


def _primary_message(exc: sa.exc.SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if primary:
        return f"{type(orig).__name__} ({orig.pgcode}): {primary}"
    text = str(orig if orig is not None else exc).strip().splitlines()
    return f"{type(orig or exc).__name__}: {text[0] if text else 'no message'}"


@contextlib.contextmanager
def translate_errors():
    """Translate driver errors once, at the edge: "no database" becomes
    :class:`DatabaseUnavailable`, any other failure :class:`DatabaseError`.  Both carry
    PostgreSQL's primary message only (its DETAIL may quote the failing row), and the driver's
    exception is not chained, so no traceback repeats the statement's data."""
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        message = _primary_message(exc)
        if is_unavailable(exc):
            raise DatabaseUnavailable(message) from None
        raise DatabaseError(message) from None


# -- the queue's operations ------------------------------------------------------------------


@dataclass(frozen=True)
class Enqueued:
    queue_id: str
    version: int
    duplicate: bool


def enqueue(
    engine: Engine,
    messages: list[dict],
    session_id: str,
    fingerprint: str | None,
    metadata: dict,
) -> Enqueued:
    """Store a conversation (or recognise a resend); its broker message commits with it."""
    with translate_errors(), engine.begin() as conn:
        row = conn.execute(
            q("enqueue"),
            {
                "messages": json.dumps(messages),
                "session_id": session_id,
                "fingerprint": fingerprint,
                "metadata": json.dumps(metadata),
            },
        ).one()
    return Enqueued(str(row.queue_id), row.queue_version, row.duplicate)


def ping(engine: Engine) -> None:
    """The health check (``nexus_health()``, callable by nexus_web)."""
    with translate_errors(), engine.connect() as conn:
        conn.execute(q("ping"))


def stats(engine: Engine) -> dict:
    """Queue and broker statistics in one round trip (``nexus_stats()``, callable by
    nexus_web): ``{"by_status": {status: {"count", "avg_processing_time_sec"}},
    "oldest_pending_age_sec", "broker": {"ready", "delayed", "claimed", "backlog",
    "dead_letters", "queues": {...}}}`` (seconds)."""
    with translate_errors(), engine.connect() as conn:
        found = conn.execute(q("stats")).scalar_one()
    return {
        "by_status": {
            status: {
                "count": values["count"],
                "avg_processing_time_sec": _float(values["avg_processing_time_sec"]),
            }
            for status, values in found["by_status"].items()
        },
        "oldest_pending_age_sec": _float(found["oldest_pending_age_sec"]),
        "broker": found["broker"],
    }


def queue_stats(engine: Engine) -> dict:
    """The seed's monitoring query plus the age of the oldest pending row (seconds)."""
    found = stats(engine)
    return {k: found[k] for k in ("by_status", "oldest_pending_age_sec")}


def _float(value) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Claimed:
    messages: list[dict]
    fingerprint: str | None


def claim_version(engine: Engine, queue_id: str, version: int) -> Claimed | None:
    """Commit ``processing`` for this version; None when the delivery is stale or a duplicate."""
    with translate_errors(), engine.begin() as conn:
        row = conn.execute(q("claim_version"), {"queue_id": queue_id, "version": version}).first()
    return None if row is None else Claimed(row.messages, row.fingerprint)


def complete_version(
    engine: Engine,
    queue_id: str,
    version: int,
    result: dict,
    usage: dict | None,
    extractor: str,
) -> dict | None:
    """Mark the version completed and merge its prospect, in one transaction.

    Returns the merge outcome (``{}`` when the row has no fingerprint), or None when the version
    was no longer ``processing`` -- superseded or completed by another delivery -- in which case
    nothing is written, so the merge happens exactly once per version.
    """
    with translate_errors(), engine.begin() as conn:
        row = conn.execute(
            q("complete_version"),
            {
                "queue_id": queue_id,
                "version": version,
                "result": json.dumps(result),
                "usage": None if usage is None else json.dumps(usage),
                "extractor": extractor,
            },
        ).first()
        if row is None:
            return None
        if not row.fingerprint:
            return {}
        return conn.execute(
            q("merge_prospect"), {"fingerprint": row.fingerprint, "data": json.dumps(result)}
        ).scalar_one()


def record_failure(
    engine: Engine, queue_id: str, version: int, error: str, final: bool
) -> tuple[int, str] | None:
    """Record one failed attempt; returns (retry_count, status) or None if stale."""
    with translate_errors(), engine.begin() as conn:
        row = conn.execute(
            q("record_failure"),
            {
                "queue_id": queue_id,
                "version": version,
                "error": error[:2000],
                "final": final,
            },
        ).first()
    return None if row is None else (row.retry_count, row.status)


def cleanup_old_rows(engine: Engine, batch_size: int = 1000) -> int:
    """Delete expired rows in batches, one short transaction each; returns the total."""
    total = 0
    while True:
        with translate_errors(), engine.begin() as conn:
            deleted = conn.execute(q("cleanup_batch"), {"limit": batch_size}).scalar_one()
        total += deleted
        if deleted < batch_size:
            return total


@contextlib.contextmanager
def transaction(engine: Engine):
    """A transaction on a connection of ``engine``, with errors translated."""
    with translate_errors(), engine.begin() as conn:
        yield conn


def claim_clock_slot(conn: sa.Connection, job: str, slot) -> bool:
    """True for exactly one caller per (job, slot), across every clock process.  Runs in the
    caller's transaction, so the slot and the job's message commit together or not at all."""
    won = conn.execute(q("claim_clock_slot"), {"job": job, "slot": slot}).first() is not None
    if won:
        conn.execute(q("forget_old_clock_slots"))
    return won


def sweep_stuck_rows(engine: Engine, min_age_s: int) -> int:
    """Give a new broker message to every row stuck without one; returns how many."""
    with translate_errors(), engine.begin() as conn:
        return conn.execute(q("sweep_stuck_rows"), {"min_age_s": min_age_s}).scalar_one()
