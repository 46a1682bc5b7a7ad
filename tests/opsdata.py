"""Rows in the states an operator meets (failed, dead-lettered, merged), made with the same SQL
the worker and the broker run."""

from __future__ import annotations

import json

import sqlalchemy as sa

from nexus import db

CONVERSATION = [{"role": "user", "content": "Hola, me llamo Ana y mi teléfono es 3001234567"}]


def enqueue(engine, session: str, fingerprint: str | None = None) -> str:
    return db.enqueue(engine, CONVERSATION, session, fingerprint, {}).queue_id


def fail(engine, queue_id: str, reason: str = "boom") -> None:
    """Fail the row's current version as the worker does after its last attempt, and move
    its broker message to the dead letters as the broker does."""
    with db.transaction(engine) as conn:
        version = conn.execute(
            sa.text("SELECT version FROM nexus_queue WHERE id = :id"), {"id": queue_id}
        ).scalar_one()
    assert db.claim_version(engine, queue_id, version) is not None
    assert db.record_failure(engine, queue_id, version, reason, final=True) == (1, "failed")
    with db.transaction(engine) as conn:
        conn.execute(
            sa.text(
                "WITH m AS (DELETE FROM broker_messages WHERE args ->> 0 = :id RETURNING *) "
                "INSERT INTO broker_dead_letters (message_id, queue_name, actor_name, args, "
                "kwargs, options, message_timestamp, enqueued_at, attempts, retries, error) "
                "SELECT message_id, queue_name, actor_name, args, kwargs, options, "
                "message_timestamp, enqueued_at, 6, 5, :reason FROM m"
            ),
            {"id": queue_id, "reason": reason},
        )


def merge(engine, fingerprint: str, **fields) -> None:
    with db.transaction(engine) as conn:
        conn.execute(
            sa.text("SELECT public.update_prospect_data(:fingerprint, CAST(:data AS jsonb))"),
            {"fingerprint": fingerprint, "data": json.dumps(fields)},
        )
