"""Operations: what an operator reads and does without psql.

One implementation for the ``nexus`` CLI and the web admin: every function here calls a SQL
function of ``sql/migrations/0008_operations.sql`` (named queries in ``sql/queries.sql``), which
the web process may call as ``nexus_web``.  Values come back as plain Python (``datetime``,
``float``, ``str``); :func:`jsonable` turns them into JSON.

These names are an interface (the admin dashboard builds on them): keep them stable.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import re
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import db
from .common import now
from .config import Settings
from .errors import DatabaseUnavailable, NexusError
from .extraction import pricing

#: SQLSTATE the operation functions raise for an unknown id in strict mode (no_data_found).
NOT_FOUND = "P0002"
#: The values of ``prospect_data.momento_optimo``.
MOMENTOS = ("caliente", "tibio", "frio")
#: Rows deleted per transaction by the prospect retention.
EXPIRE_BATCH = 1000


_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class NotFound(NexusError):
    """An id named by the operator does not exist (or is not in the state the action needs)."""


def parse_duration(text: str) -> dt.timedelta:
    """``30s``, ``15m``, ``2h``, ``7d`` -> a timedelta.  Raises ValueError with a clear message."""
    match = _DURATION.match(text or "")
    if not match:
        raise ValueError(f"{text!r} is not a duration: write a whole number and s, m, h or d (7d)")
    return dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_ids(values: Iterable[str]) -> list[str]:
    """Canonical UUID strings; raises ValueError naming the first malformed one."""
    ids = []
    for value in values:
        try:
            ids.append(str(uuid.UUID(value)))
        except (ValueError, AttributeError, TypeError):
            raise ValueError(f"{value!r} is not an id (a UUID)") from None
    return ids


@contextlib.contextmanager
def _transaction(engine: Engine) -> Iterator[sa.Connection]:
    """A transaction with driver errors translated; an unknown id becomes :class:`NotFound`."""
    try:
        with db.translate_errors():
            try:
                with engine.begin() as conn:
                    yield conn
            except sa.exc.DBAPIError as exc:
                if getattr(exc.orig, "pgcode", None) == NOT_FOUND:
                    raise NotFound(exc.orig.diag.message_primary) from None
                raise
    except DatabaseUnavailable as exc:
        raise DatabaseUnavailable(f"database unavailable: {exc}") from None


def _rows(conn: sa.Connection, name: str, **params: Any) -> list[dict]:
    return [_plain(dict(r._mapping)) for r in conn.execute(db.q(name), params)]


def _plain(row: dict) -> dict:
    out = {}
    for key, value in row.items():
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, decimal.Decimal):
            value = float(value)
        out[key] = value
    return out


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


# -- reading ----------------------------------------------------------------------------------


def status(engine: Engine, settings: Settings | None = None) -> dict:
    """Everything ``nexus status`` shows, as one dict:

    ``rows`` {status: {"last_24h", "total", "avg_processing_s_24h"}}, ``oldest_pending_s``,
    ``oldest_processing_s``, ``queues`` [{queue_name, ready, delayed, claimed, dead_letters,
    oldest_ready_s}], ``dead_letters`` (total), ``workers`` [{worker_id, hostname, pid,
    started_at, heartbeat_at, lease_until, claims}], ``periodic`` [{job, slot, fired_at}],
    ``extraction`` {"configured": {extractor, model} or None, "last_24h": [{extractor, model,
    rows}]}.  Ages in seconds.
    """
    with _transaction(engine) as conn:
        counts = _rows(conn, "ops_status_counts")
        ages = _rows(conn, "ops_oldest_ages")[0]
        queues = _rows(conn, "ops_queue_stats")
        workers = _rows(conn, "ops_live_workers")
        periodic = _rows(conn, "ops_clock_last_runs")
        used = _rows(conn, "ops_extractors_24h")
    for q in queues:
        q["oldest_ready_s"] = _round(q["oldest_ready_s"])
    configured = None
    if settings is not None:
        extractor = settings.effective_extractor
        configured = {
            "extractor": extractor,
            "model": settings.model if extractor == "claude" else None,
        }
    return {
        "rows": {
            c["status"]: {
                "last_24h": c["last_24h"],
                "total": c["total"],
                "avg_processing_s_24h": _round(c["avg_processing_s_24h"]),
            }
            for c in counts
        },
        "oldest_pending_s": _round(ages["oldest_pending_s"]),
        "oldest_processing_s": _round(ages["oldest_processing_s"]),
        "queues": queues,
        "dead_letters": sum(q["dead_letters"] for q in queues),
        "workers": workers,
        "periodic": periodic,
        "extraction": {"configured": configured, "last_24h": used},
    }


def failed_rows(engine: Engine, since: dt.timedelta | None = None, limit: int = 100) -> list[dict]:
    """Failed rows, newest failure first: id, session_id, fingerprint, version,
    error_message, retry_count, failed_at."""
    with _transaction(engine) as conn:
        return _rows(conn, "ops_failed_rows", since=since, limit=limit)


def dead_letters(engine: Engine, limit: int = 100) -> list[dict]:
    """Dead letters, newest first: message_id, queue_name, actor_name, args, retries,
    attempts, error, enqueued_at, failed_at."""
    with _transaction(engine) as conn:
        return _rows(conn, "ops_dead_letters", limit=limit)


def dead_letter(engine: Engine, message_id: str) -> dict:
    """One dead letter in full (kwargs, options, traceback too); :class:`NotFound` if unknown."""
    (message_id,) = parse_ids([message_id])
    with _transaction(engine) as conn:
        rows = _rows(conn, "ops_dead_letter", message_id=message_id)
    if not rows:
        raise NotFound(f"no dead letter with id {message_id}")
    return rows[0]


def prospects(
    engine: Engine,
    momento: str | None = None,
    since: dt.timedelta | None = None,
    limit: int = 1000,
) -> list[dict]:
    """The leads, most recently updated first (optionally one ``momento_optimo``, updated
    within ``since``)."""
    if momento is not None and momento not in MOMENTOS:
        raise ValueError(f"momento must be one of {', '.join(MOMENTOS)}, got {momento!r}")
    with _transaction(engine) as conn:
        rows = _rows(conn, "ops_prospects", momento=momento, since=since, limit=limit)
    for row in rows:
        row["objeciones"] = list(row["objeciones"] or [])
    return rows


def cost(engine: Engine, since: dt.timedelta | None = None) -> dict:
    """LLM calls within ``since`` (default: all recorded), failed calls included: counts,
    tokens by kind, cache-hit ratio and estimated USD, in total and by model.

    One source: the per-call ``llm_calls`` table and the one price table
    (:func:`nexus.extraction.pricing.cost_report`, which this reshapes for the CLI).
    """
    start = now() - since if since is not None else dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    report = pricing.cost_report(engine, start)

    def shaped(row: dict) -> dict:
        return {
            "calls": row["calls"],
            "failed_calls": row["failed_calls"],
            "tokens": {
                "input": row["input_tokens"],
                "output": row["output_tokens"],
                "cache_write": row["cache_creation_input_tokens"],
                "cache_read": row["cache_read_input_tokens"],
            },
            "cache_hit_ratio": row["cache_hit_ratio"],
            "usd": row["usd"],
        }

    total = shaped(report)
    if report["unpriced_models"]:
        total["usd"] = None
    return {
        "models": [{"model": m["model"], **shaped(m)} for m in report["by_model"]],
        "total": total,
        "unpriced_models": report["unpriced_models"],
        "prices_read_on": report["prices_read_on"],
        "prices_source": report["prices_source"],
    }


# -- acting -----------------------------------------------------------------------------------


def retry_rows(engine: Engine, ids: Iterable[str], strict: bool = False) -> int:
    """Re-open failed rows as new versions (each dispatched exactly once by the version
    trigger); returns how many.  ``strict``: an id that is not a failed row raises
    :class:`NotFound` and nothing is written; otherwise such ids are skipped."""
    ids = parse_ids(ids)
    with _transaction(engine) as conn:
        return conn.execute(db.q("ops_retry_rows"), {"ids": ids, "strict": strict}).scalar_one()


def retry_failed(engine: Engine, since: dt.timedelta | None = None) -> int:
    """Re-open every failed row (that failed within ``since``); returns how many."""
    with _transaction(engine) as conn:
        return conn.execute(db.q("ops_retry_failed"), {"since": since}).scalar_one()


def requeue_dead_letters(engine: Engine, ids: Iterable[str], strict: bool = False) -> int:
    """Put dead letters back as ready messages (same message ids); a failed queue row whose
    dead message is requeued is set back to pending so the message processes it.  Returns how
    many were requeued; ``strict`` as in :func:`retry_rows`."""
    ids = parse_ids(ids)
    with _transaction(engine) as conn:
        return conn.execute(
            db.q("ops_requeue_dead_letters"), {"ids": ids, "strict": strict}
        ).scalar_one()


def requeue_all_dead_letters(engine: Engine) -> int:
    with _transaction(engine) as conn:
        return conn.execute(db.q("ops_requeue_all_dead_letters")).scalar_one()


def purge_dead_letters(engine: Engine, older_than: dt.timedelta) -> int:
    """Delete dead letters that failed more than ``older_than`` ago; returns how many."""
    with _transaction(engine) as conn:
        return conn.execute(db.q("ops_purge_dead_letters"), {"older_than": older_than}).scalar_one()


def forget_visitor(engine: Engine, fingerprint: str) -> dict[str, int]:
    """Erase a visitor; returns the rows deleted per kind: prospects, queue_rows, merges,
    broker_messages, dead_letters.  Idempotent."""
    if not fingerprint:
        raise ValueError("the fingerprint must not be empty")
    with _transaction(engine) as conn:
        return _rows(conn, "ops_forget_visitor", fingerprint=fingerprint)[0]


def expire_prospects(engine: Engine, max_age: dt.timedelta, batch_size: int = EXPIRE_BATCH) -> int:
    """Retention: delete prospects not updated for ``max_age`` (and their merge-ledger rows),
    one short transaction per batch; returns how many."""
    total = 0
    while True:
        with _transaction(engine) as conn:
            deleted = conn.execute(
                db.q("ops_expire_prospects"), {"max_age": max_age, "limit": batch_size}
            ).scalar_one()
        total += deleted
        if deleted < batch_size:
            return total


def jsonable(value: Any) -> Any:
    """``value`` with datetimes as ISO 8601 strings, recursively (for ``--json``)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value
