"""What ``make chaos`` was told was accepted, and the verdict: compare it with the database.

* lost -- an accepted session whose row is missing, or whose stored conversation does not
  extend the latest accepted one (an older version replaced a newer one);
* stuck -- a row (of any session) neither ``completed`` nor ``failed``;
* failed rows must carry ``error_message``;
* duplicate_merges -- (queue_id, version) pairs merged more than once, counted in the
  ``prospect_merges`` ledger when it exists; ``None`` (not measurable) when it does not.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

import psycopg2.extras


@dataclass
class Expected:
    """The latest version of a session the client was told was accepted."""

    messages: list[dict]
    exact: bool = True  #: False for hostile bodies the server may have cleaned before storing
    queue_id: str | None = None
    fingerprint: str | None = None


class Ledger:
    """Thread-safe record of every accepted conversation and every answer seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.expected: dict[str, Expected] = {}
        self.statuses: Counter[str] = Counter()
        self.anomalies: Counter[str] = Counter()
        self.slowest: dict[str, float] = {}  #: request kind -> longest wait for an answer (s)
        self.accepted_posts = 0

    def answer(self, what: str, status: int, seconds: float = 0.0) -> None:
        """One HTTP answer (status 0: connection error or timeout) that took ``seconds``."""
        with self.lock:
            self.statuses[f"{what} {status or 'conn-error'}"] += 1
            kind = what.split()[0]
            self.slowest[kind] = max(self.slowest.get(kind, 0.0), round(seconds, 2))
            if status >= 500 and status != 503:
                self.anomalies[f"{what} answered {status}"] += 1

    def accepted(
        self, session: str, messages: list[dict], reply: dict, exact=True, fingerprint=None
    ) -> None:
        with self.lock:
            self.accepted_posts += 1
            known = self.expected.get(session)
            if known and known.queue_id and known.queue_id != reply.get("queueId"):
                self.anomalies["same session answered with another queueId"] += 1
            if known and len(messages) < len(known.messages):
                return  # a strict-prefix resend: the longer accepted version stands
            queue_id = reply.get("queueId")
            self.expected[session] = Expected(list(messages), exact, queue_id, fingerprint)

    def anomaly(self, what: str) -> None:
        with self.lock:
            self.anomalies[what] += 1


QUEUE_ROWS = """
    SELECT session_id, id::text AS id, status, version, retry_count, error_message, messages,
           fingerprint,
           extract(epoch FROM updated_at) AS updated_at
    FROM nexus_queue
"""
DUPLICATE_MERGES = """
    SELECT count(*) FROM (
        SELECT queue_id, version FROM prospect_merges GROUP BY 1, 2 HAVING count(*) > 1
    ) AS twice
"""


#: The broker's view of a row's messages (stuck rows only: what the diagnosis needs).
BROKER_STATE = """
    SELECT 'live' AS "where", to_jsonb(m) - 'args' - 'kwargs' AS message
    FROM broker_messages m WHERE m.args ->> 0 = %(id)s
    UNION ALL
    SELECT 'dead', to_jsonb(d) - 'args' - 'kwargs' - 'traceback'
    FROM broker_dead_letters d WHERE d.args ->> 0 = %(id)s
"""


def broker_state(conn, queue_id: str) -> list | str:
    """The broker messages and dead letters of one queue row, or why they could not be read."""
    try:
        with conn.cursor() as cur:
            cur.execute(BROKER_STATE, {"id": queue_id})
            return [{"where": where, **message} for where, message in cur.fetchall()]
    except psycopg2.Error as exc:  # another branch may have changed the broker's tables
        conn.rollback()
        return f"unreadable: {exc}".strip()


def broker_backlog(conn) -> dict[str, int] | str:
    """Broker messages left, by queue and state (after a drain, the ``nexus`` queue should
    have none: a message left claimed by a live worker means its outcome was never written)."""
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT queue_name || ' ' || state, count(*) FROM broker_messages GROUP BY 1"
            )
            return dict(cur.fetchall())
    except psycopg2.Error as exc:
        conn.rollback()
        return f"unreadable: {exc}".strip()


def extends(stored: list, expected: list) -> bool:
    return len(stored) >= len(expected) and stored[: len(expected)] == expected


def verdict(conn, expected: dict[str, Expected]) -> dict:
    """Compare the database with what was accepted (see the module docstring)."""
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(QUEUE_ROWS)
        rows = {row["session_id"]: row for row in cur.fetchall()}
        cur.execute("SELECT to_regclass('public.prospect_merges') IS NOT NULL AS present")
        has_ledger = cur.fetchone()["present"]
        duplicate_merges = None
        if has_ledger:
            cur.execute(DUPLICATE_MERGES)
            duplicate_merges = cur.fetchone()["count"]
    lost, stuck, unexplained = [], [], []
    for session, want in expected.items():
        row = rows.get(session)
        if row is None:
            lost.append({"session": session, "why": "no row"})
            continue
        stored = row["messages"]
        ok = extends(stored, want.messages) if want.exact else len(stored) >= len(want.messages)
        why = None
        if not ok:
            why = (f"stored {len(stored)} messages, not the accepted {len(want.messages)} "
                   "(older or other version)")  # fmt: skip
        elif want.exact and row["fingerprint"] != want.fingerprint:
            why = f"stored fingerprint {row['fingerprint']!r}, not {want.fingerprint!r}"
        if why:
            lost.append({"session": session, "id": row["id"], "status": row["status"], "why": why})
    for row in rows.values():
        brief = {k: row[k] for k in ("session_id", "id", "status", "version", "retry_count")}
        if row["status"] not in ("completed", "failed"):
            stuck.append(brief)
        elif row["status"] == "failed" and not (row["error_message"] or "").strip():
            unexplained.append(brief)
    for brief in stuck[:20]:
        brief["broker"] = broker_state(conn, brief["id"])
    statuses = Counter(row["status"] for s, row in rows.items() if s in expected)
    reasons = Counter(
        (row["error_message"] or "")[:80] for row in rows.values() if row["status"] == "failed"
    )
    return {
        "accepted": len(expected),
        "completed": statuses["completed"],
        "failed": statuses["failed"],
        "lost": len(lost),
        "stuck": len(stuck),
        "duplicate_merges": duplicate_merges,
        "failed_without_reason": len(unexplained),
        "rows": len(rows),
        "lost_rows": lost[:20],
        "stuck_rows": stuck[:20],
        "failed_without_reason_rows": unexplained[:20],
        "failure_reasons": dict(reasons.most_common(10)),
    }
