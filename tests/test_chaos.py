"""The parts of ``make chaos`` (bench/chaos.py) that decide its verdict, checked on their own.

The Claude stub is driven through the real anthropic SDK and the real extractor; the verdict
runs against a real database; the hostile bodies go through the real Flask app.  The whole
harness runs in CI (``.ci/run``: ``CHAOS_SECONDS=45 make chaos``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anthropic
import psycopg2
import pytest

from nexus import config
from nexus.errors import PermanentExtractionError, RetryableExtractionError
from nexus.extraction.claude import ClaudeExtractor
from nexus.web import create_app

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import chaos_processes  # noqa: E402
import chaos_traffic  # noqa: E402
import chaos_verdict  # noqa: E402
from chaos_stub import FAULTS, PROBE_MARK, ClaudeStub  # noqa: E402

CONVERSATION = [{"role": "user", "content": "Hola, me llamo Ana Gómez"}]


@pytest.fixture
def stub_env(monkeypatch):
    """Point the SDK at a stub; nothing from the developer's shell steers it."""
    for name in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_CUSTOM_HEADERS", "ANTHROPIC_PROFILE"):
        monkeypatch.delenv(name, raising=False)

    def start(faults):
        stub = ClaudeStub(seed=1, faults=faults).__enter__()
        monkeypatch.setenv("ANTHROPIC_BASE_URL", stub.url)
        started.append(stub)
        return stub

    started: list[ClaudeStub] = []
    yield start
    for stub in started:
        stub.close()


def extractor(**kw) -> ClaudeExtractor:
    return ClaudeExtractor("chaos-key", max_retries=0, **kw)


def test_stub_answers_the_forced_tool_call_with_a_valid_extraction(stub_env):
    stub_env({})
    result = extractor().extract(CONVERSATION)
    assert 0 <= result.prospect.nivel_interes <= 10
    assert result.usage["input_tokens"] == 1500


def test_stub_answers_structured_outputs_with_a_json_text_block(stub_env):
    stub = stub_env({})
    client = anthropic.Anthropic(api_key="chaos-key", base_url=stub.url, max_retries=0)
    response = client.messages.create(
        model=config.DEFAULT_MODEL, max_tokens=100, messages=[{"role": "user", "content": "hola"}]
    )
    assert response.content[0].type == "text"
    data = json.loads(response.content[0].text)
    assert set(data) == {"nombre", "email", "telefono", "ocupacion", "nivel_interes",
                         "objeciones", "rechazo", "arquetipo"}  # fmt: skip


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("rate_limited_429", RetryableExtractionError),
        ("overloaded_529", RetryableExtractionError),
        ("server_error_500", RetryableExtractionError),
        ("odd_error_text_500", RetryableExtractionError),
        ("garbage_wrong_shape", PermanentExtractionError),
    ],
)
def test_stub_faults_reach_the_extractor_as_its_errors(stub_env, fault, error):
    stub = stub_env({fault: 1.0})
    with pytest.raises(error):
        extractor().extract(CONVERSATION)
    assert stub.outcomes[fault] >= 1


def test_a_429_carries_retry_after(stub_env):
    stub_env({"rate_limited_429": 1.0})
    with pytest.raises(RetryableExtractionError) as caught:
        extractor().extract(CONVERSATION)
    assert caught.value.retry_after == 1


def test_garbage_json_is_an_error_not_a_result(stub_env):
    # On main the SDK's JSONDecodeError (a ValueError) escapes unclassified; the queue retries
    # it like any other exception.  A classified extraction error is as good.
    stub = stub_env({"garbage_not_json": 1.0})
    with pytest.raises((ValueError, RetryableExtractionError, PermanentExtractionError)):
        extractor().extract(CONVERSATION)
    assert stub.outcomes == {"garbage_not_json": 1}


def test_a_hang_outlasts_the_client_timeout(stub_env):
    stub_env({"hang": 1.0})
    with pytest.raises(RetryableExtractionError):
        extractor(timeout=0.5).extract(CONVERSATION)


def test_probes_are_always_answered_well(stub_env):
    stub = stub_env({"server_error_500": 1.0})
    probe = [{"role": "user", "content": f"Hola ({PROBE_MARK})"}]
    assert extractor().extract(probe).prospect is not None
    assert stub.outcomes == {"probe": 1}


def test_fault_probabilities_leave_most_answers_good():
    assert 0.8 <= 1 - sum(FAULTS.values()) < 1


# -- the verdict -----------------------------------------------------------------------------


def m(n: int) -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(n)]


@pytest.fixture
def conn(db_url):
    conn = psycopg2.connect(db_url)
    conn.autocommit = True
    yield conn
    conn.close()


def enqueue(conn, session: str, messages: list[dict], status: str, error: str | None = None):
    with conn.cursor() as cur:
        cur.execute("SELECT enqueue_nexus_message(%s::jsonb, %s)", (json.dumps(messages), session))
        queue_id = cur.fetchone()[0]
        cur.execute(
            "UPDATE nexus_queue SET status = %s, error_message = %s WHERE id = %s",
            (status, error, queue_id),
        )


def test_verdict_counts_lost_stuck_and_unexplained_failures(conn):
    enqueue(conn, "done", m(3), "completed")
    enqueue(conn, "extended", m(5), "completed")  # a later, unacknowledged POST landed
    enqueue(conn, "older", m(3), "completed")  # the accepted m(5) was replaced
    enqueue(conn, "failed", m(1), "failed", "ClaudeUnavailable: 529")
    enqueue(conn, "failed-bare", m(1), "failed")
    enqueue(conn, "pending", m(1), "pending")
    enqueue(conn, "cleaned", m(2), "completed")
    enqueue(conn, "unacknowledged", m(1), "processing")  # committed, but never answered 202
    enqueue(conn, "other-fingerprint", m(1), "completed")
    expected = {
        "done": chaos_verdict.Expected(m(3)),
        "extended": chaos_verdict.Expected(m(3)),
        "older": chaos_verdict.Expected(m(5)),
        "failed": chaos_verdict.Expected(m(1)),
        "failed-bare": chaos_verdict.Expected(m(1)),
        "pending": chaos_verdict.Expected(m(1)),
        "cleaned": chaos_verdict.Expected([{"role": "user", "content": "\ud800"}] * 2, exact=False),
        "missing": chaos_verdict.Expected(m(1)),
        "other-fingerprint": chaos_verdict.Expected(m(1), fingerprint="fp-1"),
    }

    result = chaos_verdict.verdict(conn, expected)

    assert result["accepted"] == 9
    assert result["lost"] == 3
    assert {row["session"] for row in result["lost_rows"]} == {
        "older",
        "missing",
        "other-fingerprint",
    }
    assert result["stuck"] == 2
    assert {row["session_id"] for row in result["stuck_rows"]} == {"pending", "unacknowledged"}
    pending = next(row for row in result["stuck_rows"] if row["session_id"] == "pending")
    assert [m["where"] for m in pending["broker"]] == ["live"]  # its dispatched message
    assert result["completed"] == 5
    assert result["failed"] == 2
    assert result["failed_without_reason"] == 1
    assert result["rows"] == 9


def test_verdict_counts_versions_merged_twice_in_the_ledger(conn):
    # Given a ledger without its UNIQUE constraint (this test's own database) ...
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS prospect_merges CASCADE")
        cur.execute("CREATE TABLE prospect_merges (queue_id uuid, version int)")
        cur.execute(
            "INSERT INTO prospect_merges VALUES"
            " ('00000000-0000-0000-0000-000000000001', 1),"
            " ('00000000-0000-0000-0000-000000000001', 1),"
            " ('00000000-0000-0000-0000-000000000001', 2)"
        )
    # ... one version merged twice is counted once.
    assert chaos_verdict.verdict(conn, {})["duplicate_merges"] == 1


def test_verdict_says_when_duplicate_merges_cannot_be_measured(conn):
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS prospect_merges CASCADE")
    assert chaos_verdict.verdict(conn, {})["duplicate_merges"] is None


def test_a_shorter_resend_never_lowers_what_is_expected():
    ledger = chaos_verdict.Ledger()
    ledger.accepted("s", m(5), {"queueId": "q", "duplicate": False})
    ledger.accepted("s", m(3), {"queueId": "q", "duplicate": True})
    ledger.accepted("s", m(5), {"queueId": "q", "duplicate": True})
    assert ledger.expected["s"].messages == m(5)
    assert ledger.accepted_posts == 3
    ledger.accepted("s", m(7), {"queueId": "other", "duplicate": False})
    assert ledger.anomalies == {"same session answered with another queueId": 1}


def test_the_slowest_answer_is_kept_per_kind_of_request():
    ledger = chaos_verdict.Ledger()
    ledger.answer("new", 202, 0.5)
    ledger.answer("new", 503, 5.25)
    ledger.answer("hostile deep_nesting", 400, 0.1)
    ledger.answer("new", 0, 1.0)
    assert ledger.slowest == {"new": 5.25, "hostile": 0.1}
    assert ledger.statuses["new conn-error"] == 1


# -- the hostile bodies ----------------------------------------------------------------------


@pytest.fixture
def client(db_url):
    app = create_app({"SETTINGS": config.load({}), "DATABASE_URL": db_url, "TESTING": True})
    yield app.test_client()
    app.extensions["nexus_engine"].dispose()


@pytest.mark.parametrize("kind", sorted(chaos_traffic.HOSTILE))
def test_hostile_bodies_get_the_answer_the_harness_expects(client, conn, kind):
    body, content_type = chaos_traffic.hostile_body(kind, f"hostile-{kind}")
    response = client.post("/api/nexus/producer", data=body, content_type=content_type)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM nexus_queue")
        rows = cur.fetchone()[0]
    must_accept = chaos_traffic.HOSTILE[kind]
    if must_accept is True:
        assert (response.status_code, rows) == (202, 1)
    elif must_accept is False:
        assert 400 <= response.status_code < 500 and rows == 0
        assert "error" in response.get_json()
    else:
        assert (response.status_code, rows) in ((202, 1), (400, 0))


def test_broker_backlog_counts_messages_by_queue_and_state(conn):
    enqueue(conn, "waiting", m(1), "pending")
    assert chaos_verdict.broker_backlog(conn) == {"nexus ready": 1}


def test_thread_deaths_are_read_from_the_worker_logs(tmp_path):
    (tmp_path / "worker1.log").write_bytes(
        b"[INFO] fine\nException in thread nexus-broker-completions:\nTraceback ...\n\xff\n"
    )
    (tmp_path / "web.log").write_text("Exception in thread not-a-worker:\n")
    assert chaos_processes.thread_deaths(tmp_path) == {"worker1: nexus-broker-completions": 1}
