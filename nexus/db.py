"""Engines and the SQL the application runs, loaded by name from ``sql/queries.sql``.

This module owns database access: views, actors and the CLI call the functions here and never
build queries.  Driver errors that mean "the database is not there" are translated once, into
:class:`~nexus.errors.DatabaseUnavailable`.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from . import connection
from .connection import RUNTIME, Bounds
from .errors import DatabaseError, DatabaseUnavailable, IntegrityError


def _sql_dir() -> Path:
    """``nexus/sql`` inside an installed package (setup.py copies the checkout's ``sql/``
    there at build time), else -- an editable install -- the checkout's ``sql/``."""
    packaged = Path(str(importlib.resources.files("nexus") / "sql"))
    if (packaged / "migrations").is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "sql"


#: Where the SQL files live: queries.sql, broker.sql, migrations/.
SQL_DIR = _sql_dir()
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
    :class:`DatabaseUnavailable`, a violated constraint :class:`IntegrityError` (a
    :class:`DatabaseError`), any other failure :class:`DatabaseError`.  All carry
    PostgreSQL's primary message only (its DETAIL may quote the failing row), and the driver's
    exception is not chained, so no traceback repeats the statement's data."""
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        message = _primary_message(exc)
        if is_unavailable(exc):
            raise DatabaseUnavailable(message) from None
        if isinstance(exc, sa.exc.IntegrityError):
            raise IntegrityError(message) from None
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
class VersionState:
    """Where one open version of a row stands (see the ``version_state`` query)."""

    status: str
    messages: list[dict]
    fingerprint: str | None
    result: dict | None
    signals: dict | None
    retry_count: int
    #: The version adds no visitor text to the extracted one (assistant messages only).
    unchanged: bool
    #: The version waits for quiet; ``due_in_ms`` says for how long still.
    deferred: bool
    due_in_ms: float | None
    #: Milliseconds since the version arrived (database clock).
    age_ms: float
    #: Milliseconds since the row's latest extraction started (any version); None: never.
    since_extraction_ms: float | None = None
    #: The version arrived before an earlier deferred version of the row was due.
    before_previous_due: bool = False


def version_state(engine: Engine, queue_id: str, version: int) -> VersionState | None:
    """The version's state, or None when it is not the row's current, open version."""
    with translate_errors(), engine.connect() as conn:
        row = conn.execute(q("version_state"), {"queue_id": queue_id, "version": version}).first()
    if row is None:
        return None
    return VersionState(
        status=row.status,
        messages=row.messages,
        fingerprint=row.fingerprint,
        result=row.result,
        signals=row.signals,
        retry_count=row.retry_count,
        unchanged=bool(row.unchanged),
        deferred=bool(row.deferred),
        due_in_ms=None if row.due_in_ms is None else float(row.due_in_ms),
        age_ms=float(row.age_ms),
        since_extraction_ms=(
            None if row.since_extraction_ms is None else float(row.since_extraction_ms)
        ),
        before_previous_due=bool(row.before_previous_due),
    )


def defer_version(
    engine: Engine,
    queue_id: str,
    version: int,
    debounce_ms: int,
    signals: dict | None,
    provisional: bool = False,
) -> int | None:
    """Hold the version until ``debounce_ms`` after it arrived: its message is sent again,
    delayed until then, in the same transaction.  Returns the delay (ms), or None when the
    version was deferred already, or is no longer pending.

    ``provisional``: ``signals`` carry identity values (nombre, email, telefono) that are new,
    so the same transaction recomputes the row's prospect with them (the provisional merge of
    sql/migrations/0011: no ledger row; the version's extraction supersedes them)."""
    with translate_errors(), engine.begin() as conn:
        row = conn.execute(
            q("defer_version"),
            {
                "queue_id": queue_id,
                "version": version,
                "debounce_ms": debounce_ms,
                "signals": None if signals is None else json.dumps(signals),
            },
        ).first()
        if row is not None and provisional and row.fingerprint:
            conn.execute(q("recompute_prospect"), {"fingerprint": row.fingerprint})
    return None if row is None else int(row.delay_ms)


@dataclass(frozen=True)
class Claimed:
    messages: list[dict]
    fingerprint: str | None


def claim_version(
    engine: Engine, queue_id: str, version: int, signals: dict | None = None
) -> Claimed | None:
    """Commit ``processing`` for this version; None when the delivery is stale or a duplicate.
    ``signals`` (the offline rules' findings) are stored for the next version to compare with."""
    with translate_errors(), engine.begin() as conn:
        row = conn.execute(
            q("claim_version"),
            {
                "queue_id": queue_id,
                "version": version,
                "signals": None if signals is None else json.dumps(signals),
            },
        ).first()
    return None if row is None else Claimed(row.messages, row.fingerprint)


def _merge(conn: sa.Connection, queue_id: str, version: int, fingerprint: str, data: dict):
    return conn.execute(
        q("merge_version"),
        {
            "queue_id": queue_id,
            "version": version,
            "fingerprint": fingerprint,
            "data": json.dumps(data),
        },
    ).scalar_one()


def merge_version(
    engine: Engine, queue_id: str, version: int, fingerprint: str, data: dict
) -> dict:
    """Record one version in the merge ledger and recompute the prospect; a version already
    in the ledger is not merged again (``{"merged": false, ...}``)."""
    with translate_errors(), engine.begin() as conn:
        return _merge(conn, queue_id, version, fingerprint, data)


def complete_version(
    engine: Engine,
    queue_id: str,
    version: int,
    result: dict,
    usage: dict | None,
    extractor: str,
    extractor_reason: str | None = None,
    claimed: Claimed | None = None,
) -> dict | None:
    """Mark the version completed and merge its prospect, in one transaction.

    ``extractor`` names what produced ``result``; ``extractor_reason`` says why when it is not
    the configured one (``"fallback: refusal"``), else None.

    Returns the merge outcome (``{}`` when the row has no fingerprint), or None when the version
    was no longer ``processing`` -- superseded or completed by another delivery -- in which case
    the row is not completed; the merge ledger makes the merge happen at most once per version.

    A version superseded while it was extracted is still the newest extraction of the session
    when no later one was stored: given ``claimed`` (what was extracted), the row keeps that
    result and it is merged, so what the visitor said shows in the prospect without waiting for
    the newer version (which is still processed: it may complete with this result).
    """
    params = {
        "queue_id": queue_id,
        "version": version,
        "result": json.dumps(result),
        "usage": None if usage is None else json.dumps(usage),
        "extractor": extractor,
        "extractor_reason": extractor_reason,
    }
    with translate_errors(), engine.begin() as conn:
        row = conn.execute(q("complete_version"), params).first()
        if row is None:
            if claimed is not None:
                kept = conn.execute(
                    q("keep_superseded_result"),
                    {**params, "messages": json.dumps(claimed.messages)},
                ).first()
                if kept is not None and claimed.fingerprint:
                    _merge(conn, queue_id, version, claimed.fingerprint, result)
            return None
        if not row.fingerprint:
            return {}
        return _merge(conn, queue_id, version, row.fingerprint, result)


def complete_unchanged(engine: Engine, queue_id: str, version: int) -> dict | None:
    """Complete a version that adds no visitor text with the row's stored result.

    It brings the prospect nothing new, so it is merged only when its fingerprint is not the
    one the session's result was merged into (a resend that names the visitor); the ledger
    keeps information, not resends.  Returns the merge outcome (``{}`` when nothing is merged),
    or None when the version is no longer open or has changed."""
    with translate_errors(), engine.begin() as conn:
        row = conn.execute(
            q("complete_unchanged"), {"queue_id": queue_id, "version": version}
        ).first()
        if row is None:
            return None
        merged_into = conn.execute(q("session_merged_fingerprint"), {"queue_id": queue_id}).scalar()
        if not row.fingerprint or row.fingerprint == merged_into:
            return {}
        return _merge(conn, queue_id, version, row.fingerprint, row.result)


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


#: Token counters of one LLM call, as the Messages API names them.
TOKEN_KINDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


def record_llm_calls(
    engine: Engine, queue_id: str | None, version: int | None, calls: Sequence[Mapping]
) -> None:
    """Store the usage of each call (``{"model", "outcome", <TOKEN_KINDS>...}``) in one
    transaction.  Called for failed calls too, so their cost is visible."""
    if not calls:
        return
    rows = [
        {
            "queue_id": queue_id,
            "version": version,
            "model": call["model"],
            "outcome": call["outcome"],
            **{kind: int(call.get(kind) or 0) for kind in TOKEN_KINDS},
        }
        for call in calls
    ]
    with translate_errors(), engine.begin() as conn:
        conn.execute(q("record_llm_call"), rows)


def tokens_today(engine: Engine) -> int:
    """Input (cached or not) plus output tokens of every LLM call since 00:00 UTC."""
    with translate_errors(), engine.connect() as conn:
        return int(conn.execute(q("tokens_today")).scalar_one())


def llm_usage_by_model(engine: Engine, since) -> list[dict]:
    """Calls, failed calls and tokens by kind per model since ``since`` (a datetime)."""
    with translate_errors(), engine.connect() as conn:
        rows = conn.execute(q("llm_usage_by_model"), {"since": since}).mappings().all()
    return [dict(row) for row in rows]


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
    """Give a new broker message to every row stuck without one, and mark failed (with the
    dead letter's reason) every row whose version's message the broker dead-lettered; returns
    how many were re-dispatched."""
    with translate_errors(), engine.begin() as conn:
        return conn.execute(q("sweep_stuck_rows"), {"min_age_s": min_age_s}).scalar_one()


# -- the admin surface: functions only (the web's role may call nothing else) ----------------
# Status counts, the per-minute chart and processing times come from migration 0010 (a tally,
# cheap with millions of rows); ages, broker backlog and workers from 0008's ops_* queries.


def _admin_core(conn: sa.Connection) -> dict:
    counts = {r.status: r.count for r in conn.execute(q("admin_status_counts"))}
    oldest = conn.execute(q("ops_oldest_ages")).one().oldest_pending_s
    broker = {
        r.queue_name: {
            "ready": r.ready,
            "delayed": r.delayed,
            "claimed": r.claimed,
            "dead": r.dead_letters,
        }
        for r in conn.execute(q("ops_queue_stats"))
    }
    return {
        "status_counts": counts,
        "oldest_pending_s": None if oldest is None else float(oldest),
        "broker": broker,
    }


def fold_queue_tally(engine: Engine) -> None:
    """Fold the status tally's deltas (the clock's sweeper does, every 30 s)."""
    with translate_errors(), engine.begin() as conn:
        conn.execute(q("fold_queue_tally"))


def admin_metrics(engine: Engine) -> dict:
    """What a scrape of /metrics reads: ``{"status_counts": {status: n} (all time),
    "oldest_pending_s", "broker": {queue: {ready, delayed, claimed, dead}}, "workers_live"}``."""
    with translate_errors(), engine.begin() as conn:
        snap = _admin_core(conn)
        snap["workers_live"] = len(conn.execute(q("ops_live_workers")).all())
    return snap


def admin_overview(engine: Engine, minutes: int = 60) -> dict:
    """The dashboard's numbers: :func:`admin_metrics`'s, the live workers (dicts), the
    per-minute chart (``minutes`` points ``{minute, accepted, completed, failed}``, oldest
    first) and processing time p50 / p95 (seconds) of the versions completed in that window."""
    with translate_errors(), engine.begin() as conn:
        snap = _admin_core(conn)
        snap["workers"] = [r._asdict() for r in conn.execute(q("ops_live_workers"))]
        snap["minutes"] = [
            r._asdict() for r in conn.execute(q("admin_minutes"), {"minutes": minutes})
        ]
        times = conn.execute(q("admin_processing_times"), {"window_s": minutes * 60}).one()
    snap["processing"] = {"completed": times.completed, "p50_s": times.p50_s, "p95_s": times.p95_s}
    return snap
