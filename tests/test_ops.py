"""Operations (nexus/ops.py and migration 0008) against a real database.

Rows are put in the states an operator meets (failed, dead-lettered, stale) with the same SQL
the worker runs, then the operation is applied and its effect read back.
"""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
import sqlalchemy as sa

from nexus import config, db, ops
from nexus.extraction import pricing
from tests.opsdata import enqueue, fail, merge
from tests.waiting import wait_for


def one(engine, sql: str, **params):
    with db.transaction(engine) as conn:
        return conn.execute(sa.text(sql), params).one()


def messages_for(engine, queue_id: str) -> list:
    with db.transaction(engine) as conn:
        return conn.execute(
            sa.text(
                "SELECT message_id, args, state FROM broker_messages WHERE args ->> 0 = :id "
                "ORDER BY enqueued_at"
            ),
            {"id": queue_id},
        ).all()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", dt.timedelta(seconds=30)),
        ("15m", dt.timedelta(minutes=15)),
        ("2h", dt.timedelta(hours=2)),
        ("7d", dt.timedelta(days=7)),
        (" 0s ", dt.timedelta(0)),
    ],
)
def test_parse_duration(text, expected):
    assert ops.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "7", "d", "1w", "-1d", "1.5h", "7 days", "1d2h"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="not a duration"):
        ops.parse_duration(text)


def test_status_of_an_empty_database(engine):
    status = ops.status(engine, config.load({}))
    assert status["rows"] == {
        s: {"last_24h": 0, "total": 0, "avg_processing_s_24h": None}
        for s in ("pending", "processing", "completed", "failed")
    }
    assert status["oldest_pending_s"] is None and status["oldest_processing_s"] is None
    assert status["queues"] == [] and status["dead_letters"] == 0
    assert status["workers"] == [] and status["periodic"] == []
    assert status["extraction"]["configured"] == {"extractor": "rules", "model": None}


def test_status_counts_rows_backlog_workers_and_clock(engine):
    enqueue(engine, "s-pending")
    old = enqueue(engine, "s-old-failed")
    fail(engine, old)
    with db.transaction(engine) as conn:
        # A failure from long ago: in the all-time count, not in the last 24 hours.
        conn.execute(
            sa.text("UPDATE nexus_queue SET enqueued_at = now() - interval '3 days' WHERE id = :i"),
            {"i": old},
        )
        conn.execute(
            sa.text(
                "INSERT INTO broker_workers (id, hostname, pid, lease_until) VALUES "
                "(gen_random_uuid(), 'host-a', 4242, clock_timestamp() + interval '1 minute'),"
                "(gen_random_uuid(), 'host-dead', 1, clock_timestamp() - interval '1 minute')"
            )
        )
        conn.execute(
            sa.text(
                "SELECT broker_enqueue('nexus', 'process_nexus_message', '[\"x\", 1]', "
                "p_delay_ms => 3600000)"
            )
        )
        db.claim_clock_slot(conn, "sweep_stuck_rows", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        db.claim_clock_slot(conn, "sweep_stuck_rows", dt.datetime(2026, 1, 2, tzinfo=dt.UTC))

    status = ops.status(engine)
    assert status["rows"]["pending"]["total"] == 1
    assert status["rows"]["failed"] == {"last_24h": 0, "total": 1, "avg_processing_s_24h": None}
    assert status["oldest_pending_s"] is not None and status["oldest_pending_s"] >= 0
    assert status["queues"] == [
        {
            "queue_name": "nexus",
            "ready": 1,
            "delayed": 1,
            "claimed": 0,
            "dead_letters": 1,
            "oldest_ready_s": status["queues"][0]["oldest_ready_s"],
        }
    ]
    assert status["dead_letters"] == 1
    assert [(w["hostname"], w["pid"], w["claims"]) for w in status["workers"]] == [
        ("host-a", 4242, 0)
    ]
    assert [(p["job"], p["slot"].day) for p in status["periodic"]] == [("sweep_stuck_rows", 2)]
    json.dumps(ops.jsonable(status))


def test_failed_rows_newest_first_with_since_and_limit(engine):
    a, b = enqueue(engine, "s-a", "fp-a"), enqueue(engine, "s-b")
    fail(engine, a, "first")
    fail(engine, b, "second")
    with db.transaction(engine) as conn:
        conn.execute(
            sa.text(
                "UPDATE nexus_queue SET processed_at = now() - interval '2 days' WHERE id = :i"
            ),
            {"i": a},
        )
    rows = ops.failed_rows(engine)
    assert [(r["id"], r["error_message"], r["retry_count"]) for r in rows] == [
        (b, "second", 1),
        (a, "first", 1),
    ]
    assert rows[1]["session_id"] == "s-a" and rows[1]["fingerprint"] == "fp-a"
    assert [r["id"] for r in ops.failed_rows(engine, since=dt.timedelta(days=1))] == [b]
    assert [r["id"] for r in ops.failed_rows(engine, limit=1)] == [b]


def test_retry_reopens_as_a_new_version_dispatched_once(engine):
    a = enqueue(engine, "s-a")
    fail(engine, a)
    assert ops.retry_rows(engine, [a], strict=True) == 1
    row = one(engine, "SELECT status, version, retry_count, error_message FROM nexus_queue")
    assert tuple(row) == ("pending", 2, 0, None)
    assert [(m.args, m.state) for m in messages_for(engine, a)] == [([a, 2], "ready")]
    # The dead letter of the retried row is handled: gone.
    assert ops.dead_letters(engine) == []
    # Retrying again: not failed any more, nothing happens (strict: an error, nothing written).
    assert ops.retry_rows(engine, [a]) == 0
    with pytest.raises(ops.NotFound, match=f"no failed queue row with id {a}"):
        ops.retry_rows(engine, [a], strict=True)
    assert len(messages_for(engine, a)) == 1


def test_strict_retry_with_one_unknown_id_writes_nothing(engine):
    a = enqueue(engine, "s-a")
    fail(engine, a)
    unknown = "00000000-0000-0000-0000-000000000001"
    with pytest.raises(ops.NotFound, match=unknown):
        ops.retry_rows(engine, [a, unknown], strict=True)
    assert one(engine, "SELECT status FROM nexus_queue").status == "failed"
    with pytest.raises(ValueError, match="not an id"):
        ops.retry_rows(engine, ["nope"])


def test_retry_failed_since(engine):
    a, b, c = enqueue(engine, "s-a"), enqueue(engine, "s-b"), enqueue(engine, "s-c")
    fail(engine, a)
    fail(engine, b)
    with db.transaction(engine) as conn:
        conn.execute(
            sa.text(
                "UPDATE nexus_queue SET processed_at = now() - interval '2 days' WHERE id = :i"
            ),
            {"i": a},
        )
    assert ops.retry_failed(engine, since=dt.timedelta(hours=1)) == 1
    assert ops.retry_failed(engine) == 1
    assert ops.retry_failed(engine) == 0
    with db.transaction(engine) as conn:
        statuses = dict(conn.execute(sa.text("SELECT id::text, status FROM nexus_queue")).all())
    assert statuses == {a: "pending", b: "pending", c: "pending"}
    assert [len(messages_for(engine, i)) for i in (a, b, c)] == [1, 1, 1]


def test_requeue_dead_letter_reopens_a_failed_row_with_the_same_message(engine):
    a = enqueue(engine, "s-a")
    fail(engine, a)
    (dead,) = ops.dead_letters(engine)
    assert dead["args"] == [a, 1] and dead["error"] == "boom"
    assert ops.dead_letter(engine, dead["message_id"])["options"] == {}

    assert ops.requeue_dead_letters(engine, [dead["message_id"]], strict=True) == 1
    assert [(str(m.message_id), m.args, m.state) for m in messages_for(engine, a)] == [
        (dead["message_id"], [a, 1], "ready")
    ]
    row = one(engine, "SELECT status, version, retry_count FROM nexus_queue")
    assert tuple(row) == ("pending", 1, 0)
    # The worker's claim accepts it: the requeued message processes the row.
    assert db.claim_version(engine, a, 1) is not None
    assert ops.dead_letters(engine) == []
    with pytest.raises(ops.NotFound):
        ops.dead_letter(engine, dead["message_id"])
    with pytest.raises(ops.NotFound):
        ops.requeue_dead_letters(engine, [dead["message_id"]], strict=True)


def test_requeue_all_and_purge(engine):
    ids = [enqueue(engine, f"s-{i}") for i in range(3)]
    for i in ids:
        fail(engine, i)
    with db.transaction(engine) as conn:
        conn.execute(
            sa.text(
                "UPDATE broker_dead_letters SET failed_at = now() - interval '10 days' "
                "WHERE args ->> 0 = :i"
            ),
            {"i": ids[0]},
        )
    assert ops.purge_dead_letters(engine, dt.timedelta(days=7)) == 1
    assert len(ops.dead_letters(engine)) == 2
    assert ops.requeue_all_dead_letters(engine) == 2
    assert ops.dead_letters(engine) == []
    assert [len(messages_for(engine, i)) for i in ids] == [0, 1, 1]


def test_forget_visitor_erases_everything_and_is_idempotent(engine):
    a, b = enqueue(engine, "s-a", "fp-1"), enqueue(engine, "s-b", "fp-1")
    other = enqueue(engine, "s-c", "fp-2")
    fail(engine, b)
    merge(engine, "fp-1", nombre="Ana")
    merge(engine, "fp-2", nombre="Luis")

    counts = ops.forget_visitor(engine, "fp-1")
    assert counts == {
        "prospects": 1,
        "queue_rows": 2,
        "merges": 0,
        "broker_messages": 1,
        "dead_letters": 1,
    }
    assert messages_for(engine, a) == [] and messages_for(engine, b) == []
    assert len(messages_for(engine, other)) == 1
    assert one(engine, "SELECT count(*) AS n FROM nexus_queue").n == 1
    assert [p["fingerprint_id"] for p in ops.prospects(engine)] == ["fp-2"]
    assert ops.forget_visitor(engine, "fp-1") == dict.fromkeys(counts, 0)
    with db.transaction(engine) as conn:
        assert conn.execute(sa.text("SELECT forget_visitor('fp-2')")).scalar_one() == 3
        assert conn.execute(sa.text("SELECT forget_visitor('fp-2')")).scalar_one() == 0


def test_forget_visitor_deletes_merge_ledger_rows(engine):
    a = enqueue(engine, "s-a", "fp-1")
    with db.transaction(engine) as conn:
        conn.execute(
            sa.text(
                "INSERT INTO prospect_merges (queue_id, version, fingerprint_id, data) VALUES "
                "(:a, 1, 'fp-1', '{}'), (gen_random_uuid(), 1, 'fp-1', '{}'), "
                "(gen_random_uuid(), 1, 'fp-9', '{}')"
            ),
            {"a": a},
        )
    assert ops.forget_visitor(engine, "fp-1")["merges"] == 2
    assert one(engine, "SELECT count(*) AS n FROM prospect_merges").n == 1


def test_prospects_filters_and_order(engine):
    merge(engine, "fp-hot", nombre="Ana", nivel_interes=8, momento_optimo="caliente")
    merge(engine, "fp-cold", nombre="Luis", nivel_interes=1, momento_optimo="frio")
    merge(engine, "fp-old", nombre="Eva", momento_optimo="caliente", objeciones=["precio"])
    with db.transaction(engine) as conn:
        conn.execute(
            sa.text(
                "UPDATE prospect_data SET updated_at = now() - interval '3 days' "
                "WHERE fingerprint_id = 'fp-old'"
            )
        )
        conn.execute(
            sa.text(
                "UPDATE prospect_data SET updated_at = now() - interval '1 hour' "
                "WHERE fingerprint_id = 'fp-hot'"
            )
        )
    assert [p["fingerprint_id"] for p in ops.prospects(engine)] == ["fp-cold", "fp-hot", "fp-old"]
    hot = ops.prospects(engine, momento="caliente")
    assert [p["fingerprint_id"] for p in hot] == ["fp-hot", "fp-old"]
    assert hot[0]["nivel_interes"] == 8.0 and hot[1]["objeciones"] == ["precio"]
    recent = ops.prospects(engine, momento="caliente", since=dt.timedelta(days=1))
    assert [p["fingerprint_id"] for p in recent] == ["fp-hot"]
    with pytest.raises(ValueError, match="momento"):
        ops.prospects(engine, momento="hot")


def test_cost_sums_every_call_by_model_failed_calls_included(engine):
    call = {
        "model": "claude-haiku-5-5",
        "outcome": "ok",
        "input_tokens": 1000,
        "output_tokens": 100,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 1000,
    }
    db.record_llm_calls(engine, None, 1, [call, {**call, "outcome": "http_500"}])
    db.record_llm_calls(engine, None, 1, [{**call, "model": "some-other-model"}])

    report = ops.cost(engine)
    haiku, other = report["models"]
    assert haiku["model"] == "claude-haiku-5-5" and haiku["calls"] == 2
    assert haiku["failed_calls"] == 1
    assert haiku["tokens"] == {"input": 2000, "output": 200, "cache_write": 0, "cache_read": 2000}
    assert haiku["cache_hit_ratio"] == 0.5
    price = pricing.PRICES["claude-haiku-5-5"]
    expected = (2000 * price.input + 200 * price.output + 2000 * price.cache_read) / 1e6
    assert haiku["usd"] == pytest.approx(expected)
    # A model without a price: tokens counted, no USD, so no total USD either.
    assert other["usd"] is None and report["unpriced_models"] == ["some-other-model"]
    assert report["total"]["calls"] == 3 and report["total"]["usd"] is None
    assert ops.cost(engine, since=dt.timedelta(0))["models"] == []


def test_expire_prospects_deletes_stale_ones_with_their_ledger(engine):
    with db.transaction(engine) as conn:
        conn.execute(
            sa.text(
                "INSERT INTO prospect_merges (queue_id, version, fingerprint_id, data) VALUES "
                "(gen_random_uuid(), 1, 'fp-old', '{}'), (gen_random_uuid(), 1, 'fp-new', '{}')"
            )
        )
    merge(engine, "fp-old", nombre="Eva")
    merge(engine, "fp-new", nombre="Ana")
    with db.transaction(engine) as conn:
        conn.execute(
            sa.text(
                "UPDATE prospect_data SET updated_at = now() - interval '40 days' "
                "WHERE fingerprint_id = 'fp-old'"
            )
        )
    assert ops.expire_prospects(engine, dt.timedelta(days=30), batch_size=1) == 1
    assert [p["fingerprint_id"] for p in ops.prospects(engine)] == ["fp-new"]
    assert one(engine, "SELECT array_agg(fingerprint_id) AS f FROM prospect_merges").f == ["fp-new"]
    assert ops.expire_prospects(engine, dt.timedelta(days=30)) == 0


def test_web_role_may_call_the_read_and_retry_functions_but_not_forget(engine):
    a = enqueue(engine, "s-a")
    fail(engine, a)
    with engine.connect() as conn:
        conn.execute(sa.text("SET ROLE nexus_web"))
        assert conn.execute(sa.text("SELECT count(*) FROM nexus_status_counts()")).scalar() == 4
        assert conn.execute(sa.text("SELECT count(*) FROM nexus_failed_rows()")).scalar() == 1
        assert (
            conn.execute(sa.text("SELECT nexus_retry_rows(ARRAY[:a]::uuid[])"), {"a": a}).scalar()
            == 1
        )
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.execute(sa.text("SELECT forget_visitor('x')"))
        conn.rollback()


def test_forget_waits_for_a_worker_completing_the_row_without_deadlock(engine):
    """The worker's completion locks the queue row, then the prospect (the merge); forget
    takes them in the same order, so it waits for the worker and then erases both."""
    qid = enqueue(engine, "s-a", "fp-1")
    merge(engine, "fp-1", nombre="Ana")
    assert db.claim_version(engine, qid, 1) is not None
    worker = engine.connect()
    try:
        tx = worker.begin()
        worker.execute(
            sa.text("UPDATE nexus_queue SET status = 'completed' WHERE id = :i"), {"i": qid}
        )
        outcome: dict = {}
        forgetting = threading.Thread(
            target=lambda: outcome.update(ops.forget_visitor(engine, "fp-1"))
        )
        forgetting.start()
        wait_for(
            lambda: (
                one(
                    engine,
                    "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%nexus_forget_visitor%'",
                ).n
            ),
            "forget to wait for the row lock",
        )
        worker.execute(
            sa.text("SELECT public.update_prospect_data(:fingerprint, CAST(:data AS jsonb))"),
            {"fingerprint": "fp-1", "data": '{"email": "a@b.co"}'},
        )
        tx.commit()
    finally:
        worker.close()
    forgetting.join(timeout=60)
    assert outcome == {
        "prospects": 1,
        "queue_rows": 1,
        "merges": 0,
        "broker_messages": 1,
        "dead_letters": 0,
    }
    assert ops.prospects(engine) == []
