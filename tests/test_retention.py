"""Retention of prospects (NEXUS_PROSPECT_RETENTION_DAYS), applied by the real daily cleanup
actor in a real ``dramatiq workers`` process."""

from __future__ import annotations

import dramatiq
import pytest
import sqlalchemy as sa

from nexus import db
from nexus.broker import PostgresBroker
from tests.opsdata import merge
from tests.test_pipeline import Workers
from tests.waiting import wait_for


def prospect_ids(engine) -> list[str]:
    with engine.connect() as conn:
        return (
            conn.execute(sa.text("SELECT fingerprint_id FROM prospect_data ORDER BY 1"))
            .scalars()
            .all()
        )


def age_prospect(engine, fingerprint: str, days: int) -> None:
    with db.transaction(engine) as conn:
        conn.execute(
            sa.text(
                "UPDATE prospect_data SET updated_at = now() - make_interval(days => :d) "
                "WHERE fingerprint_id = :f"
            ),
            {"d": days, "f": fingerprint},
        )


def send_cleanup(engine) -> None:
    broker = PostgresBroker(engine=engine)
    message = dramatiq.Message(
        queue_name="nexus-periodic",
        actor_name="cleanup_old_nexus_queue",
        args=(),
        kwargs={},
        options={},
    )
    with db.transaction(engine) as conn:
        broker.enqueue(message, connection=conn)


def cleanup_done(engine) -> bool:
    """The cleanup's message is gone (acked) and not dead: the actor ran to its end."""
    with engine.connect() as conn:
        live, dead = conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM broker_messages WHERE queue_name = 'nexus-periodic'),"
                " (SELECT count(*) FROM broker_dead_letters)"
            )
        ).one()
    assert dead == 0, "the cleanup actor failed"
    return live == 0


@pytest.fixture
def workers(db_url, tmp_path):
    w = Workers(db_url, tmp_path)
    yield w
    w.stop()


@pytest.mark.slow
def test_daily_cleanup_deletes_prospects_past_retention(engine, workers):
    merge(engine, "fp-stale", nombre="Eva")
    merge(engine, "fp-recent", nombre="Ana")
    age_prospect(engine, "fp-stale", 91)
    age_prospect(engine, "fp-recent", 89)
    workers.start(NEXUS_PROSPECT_RETENTION_DAYS="90")
    send_cleanup(engine)
    wait_for(lambda: cleanup_done(engine), "the cleanup to run")
    assert prospect_ids(engine) == ["fp-recent"]


@pytest.mark.slow
def test_without_retention_the_cleanup_keeps_prospects(engine, workers):
    merge(engine, "fp-ancient", nombre="Eva")
    age_prospect(engine, "fp-ancient", 3650)
    workers.start()
    send_cleanup(engine)
    wait_for(lambda: cleanup_done(engine), "the cleanup to run")
    assert prospect_ids(engine) == ["fp-ancient"]
