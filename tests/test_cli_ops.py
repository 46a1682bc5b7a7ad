"""The operator's commands (``nexus status|failed|retry|dead-letters|forget|prospects|cost``)
run in-process through :func:`nexus.cli.main` -- the console script's own entry point, so exit
codes and stderr are what an operator gets -- against a real database."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from nexus import db
from nexus.cli import main
from nexus.extraction import pricing
from tests.opsdata import enqueue, fail, merge

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def nexus(db_url, monkeypatch, capsys):
    """Run ``nexus ARGS`` on this test's database: returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("DATABASE_URL", db_url)

    def run(*args: str):
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def scalar(engine, sql: str, **params):
    with db.transaction(engine) as conn:
        return conn.execute(sa.text(sql), params).scalar()


def test_status_table_and_json(nexus, engine):
    enqueue(engine, "s-1")
    fail(engine, enqueue(engine, "s-2"))
    code, out, err = nexus("status")
    assert code == 0, err
    for heading in ("Queue rows", "Broker", "Workers", "Periodic actors", "Extraction"):
        assert heading in out
    assert "configured here: rules" in out
    code, out, _ = nexus("status", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["rows"]["pending"]["total"] == 1 and report["rows"]["failed"]["last_24h"] == 1
    assert report["dead_letters"] == 1
    assert report["queues"][0]["queue_name"] == "nexus" and report["queues"][0]["ready"] == 1


def test_failed_lists_reason_and_rejects_a_bad_duration(nexus, engine):
    qid = enqueue(engine, "s-1", "fp-1")
    fail(engine, qid, "PermanentExtractionError: bad request")
    code, out, _ = nexus("failed")
    assert code == 0
    assert qid in out and "s-1" in out and "fp-1" in out and "PermanentExtractionError" in out
    code, out, _ = nexus("failed", "--since", "1h", "--limit", "5", "--json")
    (row,) = json.loads(out)
    assert row["id"] == qid and row["retry_count"] == 1
    code, out, err = nexus("failed", "--since", "7 days")
    assert code == 2 and out == ""
    assert "'7 days' is not a duration" in err


def test_retry_ids_all_or_nothing(nexus, engine):
    a = enqueue(engine, "s-a")
    fail(engine, a)
    unknown = "00000000-0000-0000-0000-0000000000ff"
    code, out, err = nexus("retry", a, unknown)
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [f"nexus: no failed queue row with id {unknown}"]
    assert scalar(engine, "SELECT status FROM nexus_queue") == "failed"

    code, out, _ = nexus("retry", a)
    assert code == 0 and out.strip() == "re-opened 1 failed row"
    assert scalar(engine, "SELECT version FROM nexus_queue") == 2
    assert scalar(engine, "SELECT count(*) FROM broker_messages WHERE args = :a", a=f'["{a}", 2]')
    assert scalar(engine, "SELECT count(*) FROM broker_messages") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give row ids or --all-failed"),
        (("--all-failed", "00000000-0000-0000-0000-000000000001"), "not both"),
        (("--since", "1d", "00000000-0000-0000-0000-000000000001"), "--since goes with"),
        (("not-a-uuid",), "'not-a-uuid' is not an id"),
    ],
)
def test_retry_bad_usage_is_exit_2(nexus, args, message):
    code, out, err = nexus("retry", *args)
    assert code == 2 and out == "" and message in err


def test_retry_all_failed_since(nexus, engine):
    a, b = enqueue(engine, "s-a"), enqueue(engine, "s-b")
    fail(engine, a)
    fail(engine, b)
    with db.transaction(engine) as conn:
        conn.execute(
            sa.text(
                "UPDATE nexus_queue SET processed_at = now() - interval '2 days' WHERE id = :a"
            ),
            {"a": a},
        )
    code, out, _ = nexus("retry", "--all-failed", "--since", "1d", "--json")
    assert code == 0 and json.loads(out) == {"retried": 1}
    code, out, _ = nexus("retry", "--all-failed")
    assert code == 0 and out.strip() == "re-opened 1 failed row"
    assert scalar(engine, "SELECT count(*) FROM nexus_queue WHERE status = 'pending'") == 2


def test_dead_letters_list_show_requeue_purge(nexus, engine):
    a, b = enqueue(engine, "s-a"), enqueue(engine, "s-b")
    fail(engine, a, "TimeLimitExceeded: 30 s")
    fail(engine, b)
    code, out, _ = nexus("dead-letters", "--json")
    letters = json.loads(out)
    assert code == 0 and [d["args"][0] for d in letters] == [b, a]
    code, out, _ = nexus("dead-letters", "list")
    assert code == 0 and "TimeLimitExceeded" in out and "process_nexus_message" in out

    message_a = letters[1]["message_id"]
    code, out, _ = nexus("dead-letters", "show", message_a)
    assert code == 0 and message_a in out and "TimeLimitExceeded: 30 s" in out
    code, _, err = nexus("dead-letters", "show", "00000000-0000-0000-0000-000000000001")
    assert code == 1 and "no dead letter" in err

    code, out, _ = nexus("dead-letters", "requeue", message_a)
    assert code == 0 and out.strip() == "requeued 1 dead letter"
    assert scalar(engine, "SELECT status FROM nexus_queue WHERE id = :a", a=a) == "pending"
    assert scalar(engine, "SELECT count(*) FROM broker_messages WHERE message_id = :m", m=message_a)
    code, _, err = nexus("dead-letters", "requeue", message_a)
    assert code == 1 and f"no dead letter with id {message_a}" in err
    code, _, err = nexus("dead-letters", "requeue")
    assert code == 2 and "give message ids or --all" in err

    code, out, _ = nexus("dead-letters", "purge", "--older-than", "1d", "--json")
    assert code == 0 and json.loads(out) == {"purged": 0}
    code, out, _ = nexus("dead-letters", "purge", "--older-than", "0s")
    assert code == 0 and out.strip() == "purged 1 dead letter"
    code, _, err = nexus("dead-letters", "purge")
    assert code == 2 and "--older-than" in err
    code, out, _ = nexus("dead-letters", "requeue", "--all")
    assert code == 0 and out.strip() == "requeued 0 dead letters"


def test_forget_prints_counts_and_is_idempotent(nexus, engine):
    enqueue(engine, "s-a", "fp-1")
    merge(engine, "fp-1", nombre="Ana")
    code, out, _ = nexus("forget", "fp-1")
    assert code == 0
    assert "prospects        1" in out and "queue_rows       1" in out and "total: 3" in out
    code, out, _ = nexus("forget", "fp-1", "--json")
    assert code == 0 and json.loads(out)["total"] == 0
    assert scalar(engine, "SELECT count(*) FROM nexus_queue") == 0


def test_prospects_table_csv_json(nexus, engine):
    merge(engine, "fp-hot", nombre="Ana, la de \"ventas\"", nivel_interes=8,
          momento_optimo="caliente", objeciones=["precio", "tiempo"])  # fmt: skip
    merge(engine, "fp-cold", nombre="Luis", nivel_interes=1, momento_optimo="frio")
    code, out, _ = nexus("prospects", "--momento", "caliente")
    assert code == 0 and "fp-hot" in out and "fp-cold" not in out and "precio,tiempo" in out
    code, out, _ = nexus("prospects", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["fingerprint_id"] for r in rows] == ["fp-cold", "fp-hot"]
    assert rows[1]["nombre"] == 'Ana, la de "ventas"' and rows[1]["objeciones"] == "precio;tiempo"
    assert rows[1]["nivel_interes"] == "8.0" and rows[0]["email"] == ""
    code, out, _ = nexus("prospects", "--since", "1h", "--json")
    assert {p["fingerprint_id"] for p in json.loads(out)} == {"fp-hot", "fp-cold"}
    code, _, err = nexus("prospects", "--momento", "hot")
    assert code == 2 and "hot" in err
    code, _, err = nexus("prospects", "--csv", "--json")
    assert code == 2 and "exclusive" in err


def test_cost_table_and_json(nexus, engine):
    call = {"model": "claude-haiku-5-5", "outcome": "ok", "input_tokens": 1500,
            "output_tokens": 120, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0}  # fmt: skip
    db.record_llm_calls(engine, None, 1, [call])
    code, out, _ = nexus("cost", "--since", "1d")
    assert code == 0 and "claude-haiku-5-5" in out and "1500" in out and "0.0%" in out
    assert "prices read on" in out
    code, out, _ = nexus("cost", "--json")
    report = json.loads(out)
    assert report["total"]["calls"] == 1 and report["total"]["tokens"]["output"] == 120
    price = pricing.PRICES["claude-haiku-5-5"]
    assert report["total"]["usd"] == pytest.approx((1500 * price.input + 120 * price.output) / 1e6)


def test_unreachable_database_is_one_line_exit_1(tmp_path):
    """As an operator runs it: a subprocess, one line on stderr, no traceback."""
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"postgresql://postgres@/x?host={tmp_path}"}
    for args in (["status"], ["failed", "--json"], ["forget", "fp"]):
        result = subprocess.run(
            [sys.executable, "-m", "nexus.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
        )
        assert result.returncode == 1 and result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("nexus: database unavailable: "), lines
