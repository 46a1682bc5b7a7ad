"""NEXUS_FALLBACK and NEXUS_DAILY_TOKEN_BUDGET: Claude through the real SDK against the stub,
the budget read from a real ``llm_calls`` table."""

import pytest
import sqlalchemy as sa

from nexus import config, db
from nexus.errors import PermanentExtractionError
from nexus.extraction import get_extractor
from nexus.extraction.claude import ClaudeUnavailable
from tests.claude_stub import error, refusal

SEED = [
    {"role": "user", "content": "Hola, me llamo Juan Pérez"},
    {"role": "assistant", "content": "Hola Juan, ¿en qué puedo ayudarte?"},
    {"role": "user", "content": "Quiero saber sobre las oportunidades de inversión"},
]


#: The start of today (UTC), as SQL.
MIDNIGHT_UTC = "date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"


def claude(engine=None, **env):
    settings = config.load({"ANTHROPIC_API_KEY": "test-key", **env})
    return get_extractor(settings, engine)


def spend(engine, tokens: int, at: str = "now()") -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO llm_calls (model, outcome, input_tokens, output_tokens, at)"
                f" VALUES ('claude-haiku-5-5', 'ok', :i, :o, {at})"
            ),
            {"i": tokens - tokens // 4, "o": tokens // 4},
        )


def test_a_good_answer_is_claudes(claude_api):
    result = claude().extract(SEED)
    assert result.extractor is None and result.reason is None
    assert result.prospect.arquetipo == "profesional_vision"  # the stub's, not the rules'


def test_refusal_is_one_call_then_the_rules_answer_with_the_reason(claude_api):
    # Given Claude refuses
    claude_api.script(lambda n, body: refusal(input_tokens=900, output_tokens=3))
    # When we extract
    result = claude().extract(SEED)
    # Then one call was made, the rules extracted the row, and the result says why
    assert claude_api.count == 1
    assert result.extractor == "rules" and result.reason == "fallback: refusal"
    assert result.prospect.nombre == "Juan Pérez"
    # And the refused call's usage travels with the result, to be recorded
    ((call),) = result.calls
    assert call["outcome"] == "refusal" and call["input_tokens"] == 900
    assert result.usage["input_tokens"] == 900


@pytest.mark.parametrize(
    ("status", "kind"), [(401, "authentication_error"), (400, "invalid_request_error")]
)
def test_revoked_key_or_bad_request_falls_back_to_rules(claude_api, status, kind):
    claude_api.script(lambda n, body: error(status, kind))
    result = claude().extract(SEED)
    assert result.extractor == "rules" and result.reason == f"fallback: http {status}"
    assert claude_api.count == 1
    assert result.calls[0]["outcome"] == f"http_{status}" and result.usage["input_tokens"] == 0


def test_fallback_none_fails_with_the_reason_and_the_calls(claude_api):
    claude_api.script(lambda n, body: refusal())
    with pytest.raises(PermanentExtractionError) as caught:
        claude(NEXUS_FALLBACK="none").extract(SEED)
    assert caught.value.reason == "refusal" and len(caught.value.calls) == 1


def test_transient_errors_are_left_to_the_queue_not_fallen_back(claude_api):
    claude_api.script(lambda n, body: error(529, "overloaded_error"))
    with pytest.raises(ClaudeUnavailable):
        claude().extract(SEED)


def test_spent_budget_falls_back_without_calling_the_api(claude_api, engine):
    # Given today's calls reached the budget
    spend(engine, 4_000)
    # When we extract, Then the rules answer and Claude is never asked
    result = claude(engine, NEXUS_DAILY_TOKEN_BUDGET="4000").extract(SEED)
    assert result.extractor == "rules" and result.reason == "fallback: budget spent"
    assert result.calls == () and result.usage is None
    assert claude_api.count == 0


def test_budget_counts_today_utc_only_and_every_kind_of_token(claude_api, engine):
    # Given yesterday's spending was huge and today's is under the budget
    spend(engine, 10_000_000, at=f"{MIDNIGHT_UTC} - interval '1 second'")
    spend(engine, 3_000)
    extractor = claude(engine, NEXUS_DAILY_TOKEN_BUDGET="4000")
    assert db.tokens_today(engine) == 3_000
    # When Claude answers (the pipeline records its call; here the test does)
    result = extractor.extract(SEED)
    assert result.extractor is None and claude_api.count == 1
    db.record_llm_calls(engine, None, None, result.calls)
    spent = sum(v for k, v in result.calls[0].items() if k.endswith("tokens"))
    assert db.tokens_today(engine) == 3_000 + spent > 4_000
    # And the next extraction falls back
    assert extractor.extract(SEED).reason == "fallback: budget spent"
    assert claude_api.count == 1


def test_spent_budget_with_fallback_none_fails(claude_api, engine):
    spend(engine, 100)
    with pytest.raises(PermanentExtractionError, match="budget"):
        claude(engine, NEXUS_DAILY_TOKEN_BUDGET="100", NEXUS_FALLBACK="none").extract(SEED)
    assert claude_api.count == 0
