"""The pipeline end to end: real ``dramatiq workers`` processes, the real broker, a real database.

Failures are injected where they happen in production: the Claude extractor talks, through the
real anthropic SDK, to a local stub of the API that answers 500s, blocks, or succeeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from werkzeug import Response

from nexus import config, db
from nexus.web import create_app
from tests.claude_stub import GOOD_INPUT, ClaudeAPI, answer_response, error, refusal
from tests.waiting import DEADLINE, wait_for

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = [
    {"role": "user", "content": "Hola, me llamo Juan Pérez"},
    {"role": "assistant", "content": "Hola Juan, ¿en qué puedo ayudarte?"},
    {"role": "user", "content": "Quiero saber sobre las oportunidades de inversión"},
]
LONGER = SAMPLE + [
    {"role": "assistant", "content": "¡Claro! ¿Me dejas tu teléfono?"},
    {"role": "user", "content": "Sí, es el +57 300 123 4567"},
]


def good(**fields) -> Response:
    """A good structured-output answer, with ``fields`` overriding the seed's expected values."""
    return answer_response({**GOOD_INPUT, **fields})


def api_error(status: int) -> Response:
    # retry-after-ms keeps the SDK's own quick retry quick.
    return error(status, headers={"retry-after-ms": "1"})


@pytest.fixture
def claude():
    stub = ClaudeAPI().start()
    yield stub
    stub.stop()


class Workers:
    """``dramatiq workers`` subprocesses for one database."""

    def __init__(self, db_url: str, tmp_path: Path):
        self.env = {k: v for k, v in os.environ.items() if k not in config.VARIABLES}
        self.env.update(
            DATABASE_URL=db_url,
            PYTHONPATH=str(ROOT),
            NEXUS_MIN_BACKOFF_MS="20",
            NEXUS_MAX_BACKOFF_MS="100",
            PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        )
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(self, threads: int = 2, **env) -> subprocess.Popen:
        log = open(self.tmp_path / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dramatiq",
                "workers",
                "--processes",
                "1",
                "--threads",
                str(threads),
            ],
            env={**self.env, **env},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.tmp_path.glob("worker-*.log"))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def workers(db_url, tmp_path):
    w = Workers(db_url, tmp_path)
    yield w
    w.stop()


def claude_env(stub: ClaudeAPI, **extra) -> dict:
    return {"ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": stub.url, **extra}


def fetch(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).one()


def queue_row(engine, queue_id: str):
    return fetch(engine, "SELECT * FROM nexus_queue WHERE id = :id", id=queue_id)


def wait_status(engine, queue_id: str, *statuses: str, version: int | None = None):
    def check():
        row = queue_row(engine, queue_id)
        ok = row.status in statuses and (version is None or row.version == version)
        return row if ok else None

    return wait_for(check, f"row {queue_id} to reach {statuses}")


def enqueue(engine, session: str, messages=SAMPLE, fingerprint: str | None = "fp-1"):
    return db.enqueue(engine, messages, session, fingerprint, {})


# -- the happy paths ------------------------------------------------------------------------


def test_http_post_is_extracted_and_merged(db_url, engine, workers):
    app = create_app({"SETTINGS": config.load({}), "DATABASE_URL": db_url})
    resp = app.test_client().post(
        "/api/nexus/producer",
        json={"messages": SAMPLE, "sessionId": "web-1", "fingerprint": "visitor-1"},
    )
    assert resp.status_code == 202
    queue_id = resp.get_json()["queueId"]
    workers.start()

    row = wait_status(engine, queue_id, "completed")
    assert row.processed_at is not None and row.retry_count == 0 and row.extractor == "rules"
    assert row.result["nombre"] == "Juan Pérez"
    prospect = fetch(engine, "SELECT * FROM prospect_data WHERE fingerprint_id = 'visitor-1'")
    assert prospect.nombre == "Juan Pérez"
    # The broker acks in batches, just after the job: its message then leaves the table.
    wait_for(lambda: fetch(engine, "SELECT count(*) FROM broker_messages")[0] == 0, "the ack")
    assert fetch(engine, "SELECT count(*) FROM broker_dead_letters")[0] == 0
    app.extensions["nexus_engine"].dispose()


def test_row_enqueued_from_sql_is_processed_the_same_way(engine, workers):
    with engine.begin() as conn:
        queue_id = conn.execute(
            sa.text(
                "SELECT enqueue_nexus_message(CAST(:m AS jsonb), 'psql-1', 'fp-psql', '{}'::jsonb)"
            ),
            {"m": json.dumps(SAMPLE)},
        ).scalar_one()
    workers.start()
    row = wait_status(engine, str(queue_id), "completed")
    assert row.result["nombre"] == "Juan Pérez"
    assert fetch(engine, "SELECT nombre FROM prospect_data WHERE fingerprint_id = 'fp-psql'")[0]


def test_conversation_without_fingerprint_keeps_result_on_the_row(engine, workers):
    done = enqueue(engine, "anon", fingerprint=None)
    workers.start()
    row = wait_status(engine, done.queue_id, "completed")
    assert row.result["nombre"] == "Juan Pérez"
    assert fetch(engine, "SELECT count(*) FROM prospect_data")[0] == 0


def llm_calls(engine, queue_id: str) -> list:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT * FROM llm_calls WHERE queue_id = :id ORDER BY id"), {"id": queue_id}
        ).all()


def test_claude_result_and_usage_are_stored(engine, workers, claude):
    done = enqueue(engine, "claude-1")
    workers.start(**claude_env(claude))
    row = wait_status(engine, done.queue_id, "completed")
    assert row.extractor == "claude" and row.result["arquetipo"] == "profesional_vision"
    assert row.extractor_reason is None
    assert row.result["momento_optimo"] == "caliente"
    ((call),) = llm_calls(engine, done.queue_id)
    assert (call.version, call.model, call.outcome) == (1, "claude-haiku-5-5", "ok")
    assert row.usage["output_tokens"] == call.output_tokens > 0
    assert row.usage["input_tokens"] == call.input_tokens > 0
    prospect = fetch(engine, "SELECT * FROM prospect_data WHERE fingerprint_id = 'fp-1'")
    assert float(prospect.nivel_interes) == 7 and prospect.etapa == "acoger"


# -- failures -------------------------------------------------------------------------------


def test_fails_n_times_then_completes_with_retry_count_n(engine, workers, claude):
    # Each queue attempt makes two requests (the SDK's one quick retry): fail two attempts.
    claude.script(lambda n, body: api_error(500) if n <= 4 else None)
    done = enqueue(engine, "flaky")
    workers.start(**claude_env(claude))
    row = wait_status(engine, done.queue_id, "completed")
    assert row.retry_count == 2 and row.error_message is None
    assert claude.count == 5


def test_always_failing_extraction_ends_failed_with_its_reason(engine, workers, claude):
    claude.script(lambda n, body: api_error(503))
    done = enqueue(engine, "doomed")
    workers.start(**claude_env(claude, NEXUS_MAX_RETRIES="2"))
    row = wait_status(engine, done.queue_id, "failed")
    assert row.retry_count == 3 and "503" in row.error_message
    assert row.processed_at is not None
    # The broker writes outcomes in batches, just after the actor's own commit.
    wait_for(
        lambda: fetch(engine, "SELECT count(*) FROM broker_dead_letters")[0] == 1,
        "the dead letter",
    )
    assert fetch(engine, "SELECT count(*) FROM prospect_data")[0] == 0


def test_permanent_error_without_fallback_fails_at_once(engine, workers, claude):
    claude.script(lambda n, body: api_error(400))
    done = enqueue(engine, "bad-request")
    workers.start(**claude_env(claude, NEXUS_FALLBACK="none"))
    row = wait_status(engine, done.queue_id, "failed")
    assert row.retry_count == 1 and claude.count == 1
    assert "400" in row.error_message
    assert [c.outcome for c in llm_calls(engine, done.queue_id)] == ["http_400"]


def test_garbage_answer_is_retried_then_permanent(engine, workers, claude):
    claude.script(lambda n, body: answer_response(text="{oops", input_tokens=100))
    done = enqueue(engine, "garbage")
    workers.start(**claude_env(claude, NEXUS_FALLBACK="none"))
    row = wait_status(engine, done.queue_id, "failed")
    assert row.retry_count == 1 and row.error_message
    # The failed calls' usage is recorded all the same.
    calls = llm_calls(engine, done.queue_id)
    assert [(c.outcome, c.input_tokens) for c in calls] == [("invalid", 100)] * 2


def test_refusal_is_one_call_then_the_rules_extract_the_row(engine, workers, claude):
    # Given Claude refuses, and the default NEXUS_FALLBACK=rules
    claude.script(lambda n, body: refusal(input_tokens=1200, output_tokens=4))
    done = enqueue(engine, "refused")
    workers.start(**claude_env(claude))
    # Then the row completes by the rules, saying why, after exactly one paid call
    row = wait_status(engine, done.queue_id, "completed")
    assert (row.extractor, row.extractor_reason) == ("rules", "fallback: refusal")
    assert row.retry_count == 0 and claude.count == 1
    assert row.result["nombre"] == "Juan Pérez"
    ((call),) = llm_calls(engine, done.queue_id)
    assert (call.outcome, call.input_tokens, call.output_tokens) == ("refusal", 1200, 4)
    assert fetch(engine, "SELECT nombre FROM prospect_data WHERE fingerprint_id = 'fp-1'")[0]


def test_revoked_key_falls_back_to_rules(engine, workers, claude):
    claude.script(lambda n, body: error(401, "authentication_error"))
    done = enqueue(engine, "revoked")
    workers.start(**claude_env(claude))
    row = wait_status(engine, done.queue_id, "completed")
    assert (row.extractor, row.extractor_reason) == ("rules", "fallback: http 401")
    assert [c.outcome for c in llm_calls(engine, done.queue_id)] == ["http_401"]


def test_spent_budget_falls_back_without_calling_the_api(engine, workers, claude):
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO llm_calls (model, outcome, input_tokens, output_tokens)"
                " VALUES ('claude-haiku-5-5', 'ok', 900, 100)"
            )
        )
    done = enqueue(engine, "over-budget")
    workers.start(**claude_env(claude, NEXUS_DAILY_TOKEN_BUDGET="1000"))
    row = wait_status(engine, done.queue_id, "completed")
    assert (row.extractor, row.extractor_reason) == ("rules", "fallback: budget spent")
    assert claude.count == 0 and llm_calls(engine, done.queue_id) == []


def test_transient_failures_record_every_call(engine, workers, claude):
    # Two queue attempts fail (each one SDK call with its quick retry inside), then one
    # succeeds: one llm_calls row per SDK call, the failed ones with no tokens.
    claude.script(lambda n, body: api_error(500) if n <= 4 else None)
    done = enqueue(engine, "flaky-usage")
    workers.start(**claude_env(claude))
    wait_status(engine, done.queue_id, "completed")
    calls = llm_calls(engine, done.queue_id)
    assert [c.outcome for c in calls] == ["http_500", "http_500", "ok"]
    assert calls[0].input_tokens == 0 and calls[-1].input_tokens > 0


# -- ordering, duplicates, faults -------------------------------------------------------------


def test_newer_version_arriving_mid_extraction_is_processed(engine, workers, claude):
    release = threading.Event()

    def behaviour(n, body):
        if n == 1:
            release.wait(DEADLINE)  # hold the first version's extraction back
            return good(nombre="Version Uno")
        return good(telefono="+573001234567")

    claude.script(behaviour)
    first = enqueue(engine, "grow")
    workers.start(**claude_env(claude))
    wait_for(lambda: claude.count >= 1, "the first extraction to start")
    assert queue_row(engine, first.queue_id).status == "processing"

    second = enqueue(engine, "grow", messages=LONGER)
    assert second.version == 2 and not second.duplicate
    release.set()

    row = wait_status(engine, first.queue_id, "completed", version=2)
    assert row.result["telefono"] == "+573001234567"
    prospect = fetch(engine, "SELECT * FROM prospect_data WHERE fingerprint_id = 'fp-1'")
    # Whichever finished first, the newer version's values win (a superseded version's result
    # is merged only while it is the session's newest extraction).
    assert prospect.nombre == "Juan Pérez" and prospect.telefono == "+573001234567"
    assert claude.count == 2


def test_failure_of_a_superseded_version_is_not_retried(engine, workers, claude):
    release = threading.Event()

    def behaviour(n, body):
        if n == 1:
            release.wait(DEADLINE)
            return api_error(400)  # the old version's attempt fails, after v2 arrived
        return good()

    claude.script(behaviour)
    first = enqueue(engine, "stale-fail")
    workers.start(**claude_env(claude))
    wait_for(lambda: claude.count >= 1, "the first extraction to start")
    enqueue(engine, "stale-fail", messages=LONGER)
    wait_status(engine, first.queue_id, "completed", version=2)
    release.set()

    wait_for(lambda: fetch(engine, "SELECT count(*) FROM broker_messages")[0] == 0, "the acks")
    row = queue_row(engine, first.queue_id)
    assert (row.status, row.version, row.retry_count) == ("completed", 2, 0)
    assert fetch(engine, "SELECT count(*) FROM broker_dead_letters")[0] == 0
    assert claude.count == 2


def test_duplicate_delivery_of_a_completed_version_is_a_no_op(engine, workers):
    done = enqueue(engine, "dup")
    workers.start()
    before = wait_status(engine, done.queue_id, "completed")
    merged_at = fetch(engine, "SELECT updated_at FROM prospect_data")[0]
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "SELECT broker_enqueue('nexus', 'process_nexus_message',"
                " jsonb_build_array(CAST(:id AS text), 1))"
            ),
            {"id": done.queue_id},
        )
    wait_for(
        lambda: fetch(engine, "SELECT count(*) FROM broker_messages")[0] == 0,
        "the duplicate message to be consumed",
    )
    after = queue_row(engine, done.queue_id)
    assert after.processed_at == before.processed_at and after.status == "completed"
    assert fetch(engine, "SELECT updated_at FROM prospect_data")[0] == merged_at
    assert fetch(engine, "SELECT count(*) FROM prospect_merges")[0] == 1


def test_two_concurrent_deliveries_of_one_version_merge_once(engine, workers, claude):
    both = threading.Event()

    def behaviour(n, body):
        if n == 2:
            both.set()
        both.wait(DEADLINE)  # hold each extraction until both deliveries are extracting
        return good()

    claude.script(behaviour)
    done = enqueue(engine, "twice")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "SELECT broker_enqueue('nexus', 'process_nexus_message',"
                " jsonb_build_array(CAST(:id AS text), 1))"
            ),
            {"id": done.queue_id},
        )
    workers.start(threads=2, **claude_env(claude))
    wait_status(engine, done.queue_id, "completed")
    wait_for(lambda: fetch(engine, "SELECT count(*) FROM broker_messages")[0] == 0, "the acks")
    assert claude.count == 2, "both deliveries extracted"
    assert fetch(engine, "SELECT count(*) FROM prospect_merges")[0] == 1
    prospect = fetch(engine, "SELECT * FROM prospect_data WHERE fingerprint_id = 'fp-1'")
    assert prospect.updated_at == prospect.created_at, "merged by one transaction only"


# -- debounce and assistant-only versions ------------------------------------------------------

GREETING = [{"role": "user", "content": "hola"}]
BROWSING = GREETING + [
    {"role": "assistant", "content": "¡Hola! ¿En qué te puedo ayudar?"},
    {"role": "user", "content": "solo estoy mirando"},
]
#: A debounce no test waits for: a deferred version runs only when the test moves its clock.
LONG_DEBOUNCE = {"NEXUS_DEBOUNCE_MS": "600000"}


def deferred_version(engine, queue_id: str) -> int | None:
    return fetch(engine, "SELECT deferred_version FROM nexus_queue WHERE id = :id", id=queue_id)[0]


def live_messages(engine, queue_id: str, version: int) -> int:
    return fetch(
        engine,
        "SELECT count(*) FROM broker_messages WHERE args ->> 0 = :id AND args -> 1 = to_jsonb(:v)",
        id=queue_id,
        v=version,
    )[0]


def fast_forward(engine) -> None:
    """The quiet window ends now: move the due times of the deferred row and its messages."""
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE nexus_queue SET due_at = now() WHERE due_at IS NOT NULL"))
        conn.execute(
            sa.text("UPDATE broker_messages SET due_at = clock_timestamp() WHERE state = 'ready'")
        )
        conn.execute(sa.text("SELECT pg_notify('broker_wakeup', 'nexus')"))


def test_a_version_adding_only_assistant_text_is_not_extracted_again(engine, workers, claude):
    first = enqueue(engine, "assistant-only")
    workers.start(**claude_env(claude))
    done = wait_status(engine, first.queue_id, "completed")
    assert claude.count == 1

    reply = SAMPLE + [{"role": "assistant", "content": "¡Genial! Te cuento cómo funciona."}]
    second = enqueue(engine, "assistant-only", messages=reply)
    assert second.version == 2
    row = wait_status(engine, first.queue_id, "completed", version=2)
    assert claude.count == 1, "no paid call for the assistant's reply"
    assert row.result == done.result and row.result_version == 1
    assert fetch(engine, "SELECT count(*) FROM prospect_merges")[0] == 1, "nothing new to merge"

    # The same conversation resent with a fingerprint the session was not merged into.
    third = db.enqueue(engine, reply, "assistant-only", "fp-other", {})
    assert third.version == 3
    wait_status(engine, first.queue_id, "completed", version=3)
    assert claude.count == 1
    other = fetch(engine, "SELECT * FROM prospect_data WHERE fingerprint_id = 'fp-other'")
    assert other.nombre == "Juan Pérez"


def test_a_quiet_version_waits_and_a_newer_one_supersedes_it(engine, workers, claude):
    first = enqueue(engine, "quiet", messages=GREETING)
    workers.start(**claude_env(claude, **LONG_DEBOUNCE))
    wait_for(lambda: deferred_version(engine, first.queue_id) == 1, "v1 to be deferred")
    # The first message is acked just after; the delayed one stays, waiting for its due time.
    wait_for(lambda: live_messages(engine, first.queue_id, 1) == 1, "the first message's ack")
    assert fetch(engine, "SELECT state FROM broker_messages")[0] == "ready"

    second = enqueue(engine, "quiet", messages=BROWSING)
    wait_for(lambda: deferred_version(engine, first.queue_id) == 2, "v2 to be deferred")
    assert queue_row(engine, first.queue_id).status == "pending" and claude.count == 0

    fast_forward(engine)
    row = wait_status(engine, first.queue_id, "completed", version=second.version)
    assert claude.count == 1, "one extraction once the chat went quiet"
    assert "solo estoy mirando" in json.dumps(claude.requests[0], ensure_ascii=False)
    assert row.retry_count == 0
    wait_for(lambda: fetch(engine, "SELECT count(*) FROM broker_messages")[0] == 0, "the acks")
    assert fetch(engine, "SELECT count(*) FROM broker_dead_letters")[0] == 0


def test_a_row_enqueued_from_sql_is_debounced_the_same_way(engine, workers, claude):
    with engine.begin() as conn:
        queue_id = str(
            conn.execute(
                sa.text("SELECT enqueue_nexus_message(CAST(:m AS jsonb), 'psql-quiet', 'fp-q')"),
                {"m": json.dumps(GREETING)},
            ).scalar_one()
        )
    workers.start(**claude_env(claude, **LONG_DEBOUNCE))
    wait_for(lambda: deferred_version(engine, queue_id) == 1, "v1 to be deferred")
    assert claude.count == 0
    fast_forward(engine)
    wait_status(engine, queue_id, "completed")
    assert claude.count == 1


def test_a_version_with_a_new_phone_is_extracted_at_once(engine, workers, claude):
    first = enqueue(engine, "urgent", messages=GREETING)
    workers.start(**claude_env(claude, **LONG_DEBOUNCE))
    wait_for(lambda: deferred_version(engine, first.queue_id) == 1, "v1 to be deferred")

    phone = BROWSING + [
        {"role": "assistant", "content": "¿Te llamamos?"},
        {"role": "user", "content": "sí, mi número es +57 300 123 4567"},
    ]
    claude.script(lambda n, body: good(nombre=None, telefono="+573001234567"))
    enqueue(engine, "urgent", messages=phone)
    row = wait_status(engine, first.queue_id, "completed", version=2)
    assert claude.count == 1 and row.result["telefono"] == "+573001234567"
    prospect = fetch(engine, "SELECT * FROM prospect_data WHERE fingerprint_id = 'fp-1'")
    assert prospect.telefono == "+573001234567"


def test_a_phone_shows_at_once_even_when_the_reply_supersedes_its_version(engine, workers, claude):
    release = threading.Event()

    def behaviour(n, body):
        release.wait(DEADLINE)  # the assistant's reply arrives while this call runs
        return good(telefono="+573001234567")

    claude.script(behaviour)
    first = enqueue(engine, "reply-races", messages=LONGER)
    workers.start(**claude_env(claude, **LONG_DEBOUNCE))
    wait_for(lambda: claude.count == 1, "the urgent extraction to start")
    reply = LONGER + [{"role": "assistant", "content": "¡Gracias! Te llamamos hoy."}]
    enqueue(engine, "reply-races", messages=reply)
    wait_for(lambda: deferred_version(engine, first.queue_id) == 2, "v2 to be deferred")
    release.set()

    # The superseded version's result is merged at once; the row waits for v2.
    phone_sql = "SELECT count(*) FROM prospect_data WHERE telefono = '+573001234567'"
    wait_for(lambda: fetch(engine, phone_sql)[0] == 1, "the phone in prospect_data")
    row = queue_row(engine, first.queue_id)
    assert (row.status, row.version, row.result_version) == ("pending", 2, 1)

    fast_forward(engine)
    row = wait_status(engine, first.queue_id, "completed", version=2)
    assert claude.count == 1, "v2 adds only the reply: completed with v1's result"
    assert row.result["telefono"] == "+573001234567"
    assert fetch(engine, "SELECT count(*) FROM prospect_merges")[0] == 1


NAME_TURN = [{"role": "user", "content": "hola, me llamo Ana"}]
INTENT_TURN = NAME_TURN + [
    {"role": "assistant", "content": "¡Hola Ana! ¿Qué te trae por aquí?"},
    {"role": "user", "content": "quiero empezar"},
]
PHONE_TURN = INTENT_TURN + [
    {"role": "assistant", "content": "¡Genial! ¿Me dejas tu número?"},
    {"role": "user", "content": "mi número es +57 300 123 4567"},
]


def ledger_rows(engine) -> int:
    return fetch(engine, "SELECT count(*) FROM prospect_merges")[0]


def test_urgent_turns_inside_one_window_cost_one_at_once_call_and_one_final(
    engine, workers, claude
):
    answers = iter(
        [
            good(nombre="Ana", nivel_interes=2),
            good(nombre="Ana Ruiz", nivel_interes=8, telefono="+573001234567"),
        ]
    )
    claude.script(lambda n, body: next(answers))
    first = enqueue(engine, "three-urgent", messages=NAME_TURN)
    workers.start(**claude_env(claude, **LONG_DEBOUNCE))
    # The first urgent turn (a name) is extracted at once.
    wait_status(engine, first.queue_id, "completed", version=1)
    assert claude.count == 1 and deferred_version(engine, first.queue_id) is None

    # Intent, then a phone, each urgent, each inside the window opened by that call: deferred.
    enqueue(engine, "three-urgent", messages=INTENT_TURN)
    wait_for(lambda: deferred_version(engine, first.queue_id) == 2, "v2 to be deferred")
    # Even once that call is older than the window, the chat has not gone quiet since (v2
    # still waits): the window lasts while the chat goes on.
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE nexus_queue SET extraction_started_at = now() - interval '1 hour'"
                " WHERE id = CAST(:id AS uuid)"
            ),
            {"id": first.queue_id},
        )
    enqueue(engine, "three-urgent", messages=PHONE_TURN)
    wait_for(lambda: deferred_version(engine, first.queue_id) == 3, "v3 to be deferred")

    # The phone the rules found is in prospect_data before the final call, without a ledger row.
    phone_sql = "SELECT count(*) FROM prospect_data WHERE telefono = '+573001234567'"
    wait_for(lambda: fetch(engine, phone_sql)[0] == 1, "the provisional phone in prospect_data")
    assert claude.count == 1 and ledger_rows(engine) == 1
    assert queue_row(engine, first.queue_id).status == "pending"

    fast_forward(engine)
    row = wait_status(engine, first.queue_id, "completed", version=3)
    assert claude.count == 2, "one at-once call and one final call"
    assert "+57 300 123 4567" in json.dumps(claude.requests[1], ensure_ascii=False)
    assert row.result["nombre"] == "Ana Ruiz" and ledger_rows(engine) == 2
    prospect = fetch(engine, "SELECT * FROM prospect_data WHERE fingerprint_id = 'fp-1'")
    # The extraction's values replace the rules' provisional ones ("Ana").
    assert (prospect.nombre, prospect.telefono) == ("Ana Ruiz", "+573001234567")
    assert (float(prospect.nivel_interes), prospect.momento_optimo) == (8, "caliente")

    # The chat went quiet (the final call ran); a new urgent turn after the window is at once.
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE nexus_queue SET extraction_started_at = now() - interval '1 hour',"
                " due_at = now() - interval '1 hour' WHERE id = CAST(:id AS uuid)"
            ),
            {"id": first.queue_id},
        )
    email = PHONE_TURN + [
        {"role": "assistant", "content": "¡Gracias!"},
        {"role": "user", "content": "y mi correo es ana@correo.com"},
    ]
    claude.script(lambda n, body: good(nombre="Ana Ruiz", email="ana@correo.com"))
    enqueue(engine, "three-urgent", messages=email)
    wait_status(engine, first.queue_id, "completed", version=4)
    assert claude.count == 3 and deferred_version(engine, first.queue_id) == 3


def test_the_first_version_with_a_phone_is_extracted_at_once(engine, workers, claude):
    claude.script(lambda n, body: good(nombre="Ana", telefono="+573001234567"))
    first = enqueue(engine, "phone-first", messages=PHONE_TURN)
    workers.start(**claude_env(claude, **LONG_DEBOUNCE))
    row = wait_status(engine, first.queue_id, "completed", version=1)
    assert claude.count == 1 and row.deferred_version is None
    assert row.extraction_started_at is not None
    prospect = fetch(engine, "SELECT * FROM prospect_data WHERE fingerprint_id = 'fp-1'")
    assert prospect.telefono == "+573001234567"


def test_another_delivery_of_a_deferred_version_is_a_no_op(engine, workers, claude):
    first = enqueue(engine, "deferred-dup", messages=GREETING)
    workers.start(**claude_env(claude, **LONG_DEBOUNCE))
    wait_for(lambda: deferred_version(engine, first.queue_id) == 1, "v1 to be deferred")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "SELECT broker_enqueue('nexus', 'process_nexus_message',"
                " jsonb_build_array(CAST(:id AS text), 1))"
            ),
            {"id": first.queue_id},
        )
    # The duplicate is consumed; only the one delayed message of the version remains.
    wait_for(lambda: live_messages(engine, first.queue_id, 1) == 1, "the duplicate's ack")
    assert fetch(engine, "SELECT state FROM broker_messages")[0] == "ready"
    assert queue_row(engine, first.queue_id).status == "pending" and claude.count == 0

    fast_forward(engine)
    wait_status(engine, first.queue_id, "completed")
    assert claude.count == 1


def test_sweeper_redispatches_a_row_that_lost_its_message(engine, workers):
    done = enqueue(engine, "lost")
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM broker_messages"))
        conn.execute(sa.text("UPDATE nexus_queue SET updated_at = now() - interval '5 minutes'"))
    assert db.sweep_stuck_rows(engine, 30) == 1
    assert db.sweep_stuck_rows(engine, 30) == 0, "a row with a live message is left alone"
    workers.start()
    wait_status(engine, done.queue_id, "completed")


def test_sweeper_fails_a_row_whose_message_the_broker_gave_up_on(engine):
    # Given a row left processing whose message was dead-lettered (as the delivery cap does
    # after workers died under it), When the sweeper runs, Then the row ends failed with the
    # dead letter's reason and is not sent to another worker.
    done = enqueue(engine, "killer")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "WITH m AS (DELETE FROM broker_messages RETURNING *) "
                "INSERT INTO broker_dead_letters (message_id, queue_name, actor_name, args, "
                "kwargs, options, message_timestamp, enqueued_at, attempts, retries, error) "
                "SELECT message_id, queue_name, actor_name, args, kwargs, options, "
                "message_timestamp, enqueued_at, 8, 0, "
                "'delivered 8 times without an outcome (worker lost)' FROM m"
            )
        )
        conn.execute(
            sa.text(
                "UPDATE nexus_queue SET status = 'processing', "
                "updated_at = now() - interval '5 minutes'"
            )
        )
    assert db.sweep_stuck_rows(engine, 30) == 0
    row = queue_row(engine, done.queue_id)
    assert row.status == "failed"
    assert "delivered 8 times without an outcome" in row.error_message
    assert fetch(engine, "SELECT count(*) FROM broker_messages")[0] == 0
    assert db.sweep_stuck_rows(engine, 30) == 0


@pytest.mark.fault
@pytest.mark.slow
def test_sigkill_mid_extraction_then_a_new_worker_completes_once(engine, workers, claude):
    started = threading.Event()

    def behaviour(n, body):
        if n == 1:
            started.set()
            claude.closing.wait(DEADLINE)  # the worker is killed while waiting for this
        return good()

    claude.script(behaviour)
    done = enqueue(engine, "killed")
    first = workers.start(**claude_env(claude))
    assert started.wait(DEADLINE)
    assert queue_row(engine, done.queue_id).status == "processing"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()

    workers.start(**claude_env(claude))
    row = wait_status(engine, done.queue_id, "completed")
    assert row.retry_count == 0 and claude.count == 2
    prospect = fetch(engine, "SELECT * FROM prospect_data WHERE fingerprint_id = 'fp-1'")
    assert prospect.nombre == "Juan Pérez" and prospect.etapa == "acoger"
    # Created and last updated by one transaction: the prospect was merged exactly once.
    assert prospect.updated_at == prospect.created_at


@pytest.mark.fault
@pytest.mark.slow
@pytest.mark.parametrize("how", ["restart", "crash"])
def test_postgres_restart_under_load_loses_nothing(private_server, tmp_path, how):
    """A clean restart, or SIGKILL of the postmaster (crash recovery on the next start)."""
    engine = db.make_engine(private_server.url)
    workers = Workers(private_server.url, tmp_path)
    try:
        ids = [enqueue(engine, f"restart-{i}", fingerprint=f"fp-{i}").queue_id for i in range(40)]
        workers.start(threads=4)
        wait_for(
            lambda: fetch(engine, "SELECT count(*) FROM nexus_queue WHERE status = 'completed'")[0],
            "the first completions",
        )
        if how == "crash":
            private_server.kill()
        else:
            private_server.stop()
        private_server.start()
        engine.dispose()
        ids += [enqueue(engine, f"after-{i}", fingerprint=f"fa-{i}").queue_id for i in range(20)]
        wait_for(
            lambda: (
                fetch(engine, "SELECT count(*) FROM nexus_queue WHERE status = 'completed'")[0]
                == len(ids)
            ),
            "every row to complete after the restart",
            timeout=90,
        )
        assert fetch(engine, "SELECT count(*) FROM prospect_data")[0] == len(ids)
    finally:
        workers.stop()
        engine.dispose()


def test_group_sigterm_stops_workers_gracefully(db_url, engine, tmp_path):
    """As honcho and Heroku do: SIGTERM to the whole process group, which dramatiq's main
    process then forwards again -- the worker must still finish its job, not be killed."""
    workers = Workers(db_url, tmp_path)
    done = enqueue(engine, "graceful")
    proc = workers.start()
    try:
        wait_status(engine, done.queue_id, "completed")
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0
    finally:
        workers.stop()
    logs = workers.logs()
    assert "Worker has been shut down" in logs
    assert "Killing worker process" not in logs
