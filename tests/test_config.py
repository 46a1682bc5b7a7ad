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


def test_auto_extractor_is_claude_when_a_key_is_set():
    s = config.load({"ANTHROPIC_API_KEY": "anything"})
    assert s.effective_extractor == "claude"
    assert (
        config.load({"ANTHROPIC_API_KEY": "k", "NEXUS_EXTRACTOR": "rules"}).effective_extractor
        == "rules"
    )


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
    ],
)
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(ConfigError) as info:
        config.load(env)
    message = str(info.value)
    assert variable in message and "\n" not in message
