"""Fixtures for the extraction tests: a clean environment and a stub Anthropic API."""

import pytest

from nexus import config
from nexus.extraction import _extractor

#: Read by the anthropic SDK itself; a developer's shell must not steer the tests.
SDK_VARIABLES = (
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_PROFILE",
    "ANTHROPIC_CONFIG_DIR",
    "ANTHROPIC_CUSTOM_HEADERS",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in (*config.VARIABLES, *SDK_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path / "anthropic-config"))
    _extractor.cache_clear()
    yield
    _extractor.cache_clear()


@pytest.fixture
def anthropic_stub(httpserver, monkeypatch):
    """A local HTTP server standing in for the Anthropic API, reached via ANTHROPIC_BASE_URL."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", httpserver.url_for("/").rstrip("/"))
    return httpserver


@pytest.fixture
def claude_api(monkeypatch):
    """:class:`tests.claude_stub.ClaudeAPI` running, and the SDK pointed at it."""
    from tests.claude_stub import ClaudeAPI

    api = ClaudeAPI().start()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
    yield api
    api.stop()
