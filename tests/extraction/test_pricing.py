"""Prices, ``cost_report`` (what ``nexus cost`` prints) and the ``llm_calls`` table."""

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from nexus import config, db
from nexus.extraction.pricing import PRICES, PRICES_READ_ON, cost_report, estimate_usd

CALL = {
    "model": "claude-haiku-5-5",
    "outcome": "ok",
    "input_tokens": 200,
    "output_tokens": 100,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 2000,
}


def test_the_default_model_is_priced():
    assert config.DEFAULT_MODEL in PRICES
    assert set(PRICES) <= config.known_models()[0]
    haiku = PRICES["claude-haiku-5-5"]
    assert (haiku.input, haiku.output, haiku.cache_write, haiku.cache_read) == (
        0.10,
        0.50,
        0.125,
        0.01,
    )
    assert PRICES_READ_ON.isoformat() == "2026-12-01"


def test_estimate_usd():
    # 200 x 0.10 + 100 x 0.50 + 2000 x 0.01 = 90 USD per million calls' worth of tokens
    assert estimate_usd("claude-haiku-5-5", CALL) == pytest.approx(90 / 1_000_000)
    assert estimate_usd("claude-unpriced", CALL) is None


def test_cost_report_sums_calls_by_model_since_a_time(engine):
    # Given calls today, failed ones included, and one from last week
    db.record_llm_calls(
        engine,
        None,
        None,
        [
            CALL,
            {**CALL, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 2000},
            {**CALL, "outcome": "http_429", **dict.fromkeys(db.TOKEN_KINDS, 0)},
            {**CALL, "model": "claude-sonnet-5-5", "outcome": "refusal"},
        ],
    )
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO llm_calls (model, outcome, input_tokens, at)"
                " VALUES ('claude-haiku-5-5', 'ok', 999999, now() - interval '7 days')"
            )
        )
    # When we ask for the last day
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    report = cost_report(engine, since)
    # Then
    assert report["calls"] == 4 and report["failed_calls"] == 2
    assert report["input_tokens"] == 600 and report["output_tokens"] == 300
    assert report["cache_creation_input_tokens"] == 2000
    assert report["cache_read_input_tokens"] == 4000
    assert report["cache_hit_ratio"] == pytest.approx(4000 / 6600, abs=1e-4)
    haiku, sonnet = report["by_model"]
    assert (haiku["model"], haiku["calls"], haiku["failed_calls"]) == ("claude-haiku-5-5", 3, 1)
    expected_haiku = (400 * 0.10 + 200 * 0.50 + 2000 * 0.125 + 2000 * 0.01) / 1e6
    expected_sonnet = (200 * 2.0 + 100 * 10.0 + 2000 * 0.10) / 1e6
    assert haiku["usd"] == pytest.approx(expected_haiku)
    assert sonnet["usd"] == pytest.approx(expected_sonnet)
    assert report["usd"] == pytest.approx(expected_haiku + expected_sonnet)
    assert report["unpriced_models"] == [] and report["prices_read_on"] == "2026-12-01"


def test_cost_report_of_nothing(engine):
    report = cost_report(engine, dt.datetime.now(dt.UTC))
    assert report["calls"] == 0 and report["usd"] == 0 and report["cache_hit_ratio"] is None


def test_llm_calls_is_closed_to_public_with_rls(engine):
    with engine.connect() as conn:
        rls = conn.execute(
            sa.text("SELECT relrowsecurity FROM pg_class WHERE oid = 'public.llm_calls'::regclass")
        ).scalar_one()
        grantees = conn.execute(
            sa.text(
                "SELECT DISTINCT grantee FROM information_schema.role_table_grants"
                " WHERE table_name = 'llm_calls'"
            )
        ).scalars()
        assert rls is True
        assert set(grantees) - {"postgres", conn.engine.url.username} == {"nexus_worker"}


def test_the_readmes_cost_figures_come_from_the_price_table():
    # The README's worked example: a ~2,000-token cached prefix, ~200 tokens of conversation,
    # ~100 output tokens, on the default model.
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    call = {"input_tokens": 200, "output_tokens": 100}
    read = estimate_usd(config.DEFAULT_MODEL, {**call, "cache_read_input_tokens": 2000})
    written = estimate_usd(config.DEFAULT_MODEL, {**call, "cache_creation_input_tokens": 2000})
    assert f"**${read:.5f} per call**" in readme
    assert f"${written:.5f} when" in readme
    assert f"about **${2 * read:.4f} per conversation**" in readme
