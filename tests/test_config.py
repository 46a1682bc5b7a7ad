"""Configuration: defaults, and one clear line naming the variable for a bad value."""

import pytest

from nexus import config
from nexus.errors import ConfigError


def test_defaults():
    s = config.load({})
    assert s.database_url is None and s.port == 8000
    assert (s.max_retries, s.min_backoff_ms, s.max_backoff_ms) == (5, 2000, 300000)
    assert s.extractor == "auto" and s.effective_extractor == "rules"
    assert s.model == config.DEFAULT_MODEL and s.allowed_origins == ()
    assert (s.max_extract_chars, s.phone_region) == (24_000, "CO")
    assert s.prospect_retention_days is None


def test_prospect_retention_days():
    assert config.load({"NEXUS_PROSPECT_RETENTION_DAYS": "90"}).prospect_retention_days == 90
    assert config.load({"NEXUS_PROSPECT_RETENTION_DAYS": " "}).prospect_retention_days is None


def test_auto_extractor_is_claude_when_a_key_is_set():
    s = config.load({"ANTHROPIC_API_KEY": "anything"})
    assert s.effective_extractor == "claude"
    assert (
        config.load({"ANTHROPIC_API_KEY": "k", "NEXUS_EXTRACTOR": "rules"}).effective_extractor
        == "rules"
    )


def test_debounce_defaults_to_30s_with_claude_and_0_with_rules():
    assert config.load({}).debounce_ms == 0
    assert config.load({"ANTHROPIC_API_KEY": "k"}).debounce_ms == 30_000
    assert config.load({"ANTHROPIC_API_KEY": "k", "NEXUS_EXTRACTOR": "rules"}).debounce_ms == 0
    assert config.load({"ANTHROPIC_API_KEY": "k", "NEXUS_DEBOUNCE_MS": "0"}).debounce_ms == 0
    assert config.load({"NEXUS_DEBOUNCE_MS": "1500"}).debounce_ms == 1500


def test_values_are_read():
    s = config.load(
        {
            "DATABASE_URL": "postgresql://u:p@h:5433/db",
            "PORT": "9000",
            "NEXUS_MAX_RETRIES": "0",
            "NEXUS_MIN_BACKOFF_MS": "10",
            "NEXUS_MAX_BACKOFF_MS": "20",
            "NEXUS_ALLOWED_ORIGINS": "https://a.example, http://b.example:8080/ ,",
            "NEXUS_MAX_EXTRACT_CHARS": "1048576",
            "NEXUS_PHONE_REGION": " mx ",
        }
    )
    assert (s.max_extract_chars, s.phone_region) == (1_048_576, "MX")
    assert s.database_url == "postgresql://u:p@h:5433/db" and s.port == 9000
    assert (s.max_retries, s.min_backoff_ms, s.max_backoff_ms) == (0, 10, 20)
    assert s.allowed_origins == ("https://a.example", "http://b.example:8080")


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"NEXUS_MAX_RETRIES": "-1"}, "NEXUS_MAX_RETRIES"),
        ({"NEXUS_MIN_BACKOFF_MS": "1.5"}, "NEXUS_MIN_BACKOFF_MS"),
        ({"NEXUS_MIN_BACKOFF_MS": "50", "NEXUS_MAX_BACKOFF_MS": "10"}, "NEXUS_MAX_BACKOFF_MS"),
        ({"NEXUS_EXTRACTOR": "gpt"}, "NEXUS_EXTRACTOR"),
        ({"NEXUS_EXTRACTOR": "claude"}, "ANTHROPIC_API_KEY"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"NEXUS_ALLOWED_ORIGINS": "example.com"}, "NEXUS_ALLOWED_ORIGINS"),
        ({"NEXUS_MAX_EXTRACT_CHARS": "500"}, "NEXUS_MAX_EXTRACT_CHARS"),
        ({"NEXUS_MAX_EXTRACT_CHARS": "2000000"}, "NEXUS_MAX_EXTRACT_CHARS"),
        ({"NEXUS_PHONE_REGION": "XX"}, "NEXUS_PHONE_REGION"),
        ({"NEXUS_PHONE_REGION": "colombia"}, "NEXUS_PHONE_REGION"),
        ({"NEXUS_PROSPECT_RETENTION_DAYS": "0"}, "NEXUS_PROSPECT_RETENTION_DAYS"),
        ({"NEXUS_PROSPECT_RETENTION_DAYS": "30d"}, "NEXUS_PROSPECT_RETENTION_DAYS"),
        ({"NEXUS_PROSPECT_RETENTION_DAYS": "-5"}, "NEXUS_PROSPECT_RETENTION_DAYS"),
        ({"NEXUS_MODEL": "claude-haiku-9"}, "NEXUS_MODEL"),
        ({"NEXUS_MODEL": "claude-3-haiku-20240307"}, "NEXUS_MODEL"),
        ({"NEXUS_FALLBACK": "gpt"}, "NEXUS_FALLBACK"),
        ({"NEXUS_DAILY_TOKEN_BUDGET": "lots"}, "NEXUS_DAILY_TOKEN_BUDGET"),
        ({"NEXUS_DAILY_TOKEN_BUDGET": "-5"}, "NEXUS_DAILY_TOKEN_BUDGET"),
        ({"NEXUS_DEBOUNCE_MS": "-1"}, "NEXUS_DEBOUNCE_MS"),
        ({"NEXUS_DEBOUNCE_MS": "30s"}, "NEXUS_DEBOUNCE_MS"),
        ({"NEXUS_DEBOUNCE_MS": "3600001"}, "NEXUS_DEBOUNCE_MS"),
    ],
)
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(ConfigError) as info:
        config.load(env)
    message = str(info.value)
    assert variable in message and "\n" not in message


def test_extraction_v2_defaults_and_values():
    s = config.load({})
    assert s.fallback == "rules" and s.daily_token_budget is None
    s = config.load({"NEXUS_FALLBACK": "None", "NEXUS_DAILY_TOKEN_BUDGET": " 2000000 "})
    assert s.fallback == "none" and s.daily_token_budget == 2_000_000


def test_default_model_is_current_and_listed_by_the_sdk():
    ids, deprecated = config.known_models()
    assert config.DEFAULT_MODEL in ids and config.DEFAULT_MODEL not in deprecated
    assert "haiku" in config.DEFAULT_MODEL


def test_every_listed_model_is_accepted():
    ids, deprecated = config.known_models()
    for model in sorted(ids - set(deprecated)):
        assert config.load({"NEXUS_MODEL": model}).model == model


def test_a_deprecated_model_warns_at_load_and_still_works():
    _, deprecated = config.known_models()
    model = sorted(deprecated)[0]
    with pytest.warns(config.DeprecatedModelWarning, match=model):
        assert config.load({"NEXUS_MODEL": model}).model == model
