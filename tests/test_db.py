"""nexus.db at the edge: driver errors are translated once, without personal data."""

import traceback

import pytest
import sqlalchemy as sa

from nexus import db
from nexus.errors import DatabaseError, DatabaseUnavailable

SECRET = "juan.secreto@example.com"


def test_failed_statement_error_carries_no_parameters_or_row(engine):
    done = db.enqueue(engine, [{"role": "user", "content": SECRET}], "s-err", "fp-err", {})
    assert db.claim_version(engine, done.queue_id, done.version) is not None
    bad = {"nombre": "Juan", "email": SECRET, "nivel_interes": 99}  # violates a CHECK
    with pytest.raises(DatabaseError) as info:
        db.complete_version(engine, done.queue_id, done.version, bad, None, "rules")
    text = "".join(traceback.format_exception(info.value))
    assert "check constraint" in str(info.value)
    assert SECRET not in text and "Juan" not in text
    # Nothing of the failed transaction stayed behind.
    with engine.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM nexus_queue")).scalar_one()
    assert status == "processing"


def test_unreachable_database_is_database_unavailable(tmp_path):
    engine = db.make_engine(f"postgresql://postgres@/x?host={tmp_path}")
    with pytest.raises(DatabaseUnavailable):
        db.ping(engine)
    engine.dispose()


def test_queries_are_parsed_by_name():
    parsed = db.parse_queries("-- name: a\nSELECT 1;\n\n-- name: b\n-- doc\nSELECT 2;\n")
    assert parsed == {"a": "SELECT 1;", "b": "-- doc\nSELECT 2;"}


def test_enqueue_gives_up_on_a_locked_row(engine):
    """An operator holding the row's lock makes a POST fail (503), not hang."""
    messages = [{"role": "user", "content": "hola"}]
    db.enqueue(engine, messages, "locked", "fp", {})
    with engine.begin() as holder:
        holder.execute(sa.text("SELECT 1 FROM nexus_queue WHERE session_id = 'locked' FOR UPDATE"))
        with pytest.raises(DatabaseUnavailable, match="lock timeout"):
            db.enqueue(engine, messages + messages, "locked", "fp", {})
