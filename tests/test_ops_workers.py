"""Operator fixes applied to a live system: real ``dramatiq workers`` processes, the Claude path
through the real SDK against the local stub, and the CLI's entry point."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from nexus.cli import main
from tests.claude_stub import ClaudeAPI
from tests.test_pipeline import (
    Workers,
    api_error,
    claude_env,
    enqueue,
    fetch,
    wait_status,
)
from tests.waiting import wait_for


@pytest.fixture
def stub():
    claude = ClaudeAPI().start()
    yield claude
    claude.stop()


@pytest.fixture
def workers(db_url, tmp_path):
    w = Workers(db_url, tmp_path)
    yield w
    w.stop()


def nexus(monkeypatch, capsys, db_url, *args: str) -> str:
    monkeypatch.setenv("DATABASE_URL", db_url)
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def failed_and_dead(engine, stub, workers) -> tuple[str, str]:
    """A row that failed for good (a 400 from the API, no fallback) and its dead letter."""
    stub.script(lambda n, body: api_error(400))
    queue_id = enqueue(engine, "s-ops").queue_id
    workers.start(**claude_env(stub, NEXUS_FALLBACK="none"))
    wait_status(engine, queue_id, "failed")
    wait_for(
        lambda: fetch(engine, "SELECT count(*) FROM broker_dead_letters")[0] == 1,
        "the dead letter",
    )
    message_id = str(fetch(engine, "SELECT message_id FROM broker_dead_letters")[0])
    stub.script(lambda n, body: None)
    return queue_id, message_id


def no_live_message(engine) -> bool:
    return fetch(engine, "SELECT count(*) FROM broker_messages")[0] == 0


@pytest.mark.slow
def test_cli_retry_completes_a_failed_row_with_one_more_extraction(
    engine, db_url, stub, workers, monkeypatch, capsys
):
    queue_id, _ = failed_and_dead(engine, stub, workers)
    assert stub.count == 1
    out = nexus(monkeypatch, capsys, db_url, "retry", queue_id)
    assert out.strip() == "re-opened 1 failed row"
    row = wait_status(engine, queue_id, "completed", version=2)
    assert row.retry_count == 0 and row.error_message is None
    wait_for(lambda: no_live_message(engine), "the message to be acked")
    assert stub.count == 2  # dispatched exactly once
    assert fetch(engine, "SELECT nombre FROM prospect_data")[0] == "Juan Pérez"
    assert fetch(engine, "SELECT count(*) FROM broker_dead_letters")[0] == 0


@pytest.mark.slow
def test_cli_requeue_of_a_dead_letter_processes_its_failed_row(
    engine, db_url, stub, workers, monkeypatch, capsys
):
    queue_id, message_id = failed_and_dead(engine, stub, workers)
    out = nexus(monkeypatch, capsys, db_url, "dead-letters", "requeue", message_id)
    assert out.strip() == "requeued 1 dead letter"
    row = wait_status(engine, queue_id, "completed", version=1)
    assert row.error_message is None
    wait_for(lambda: no_live_message(engine), "the message to be acked")
    assert stub.count == 2
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM broker_dead_letters")).scalar() == 0
