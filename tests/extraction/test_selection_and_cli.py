"""get_extractor() by settings, and the ``nexus extract`` command."""

import io
import json

import pytest

from nexus import config
from nexus.extraction import Extractor, cli_main, get_extractor
from nexus.extraction.claude import ClaudeExtractor
from nexus.extraction.fallback import FallbackExtractor
from nexus.extraction.rules import RulesExtractor

SEED = {
    "messages": [
        {"role": "user", "content": "Hola, me llamo Juan Pérez"},
        {"role": "assistant", "content": "Hola Juan, ¿en qué puedo ayudarte?"},
        {"role": "user", "content": "Quiero saber sobre las oportunidades de inversión"},
    ]
}


def test_auto_without_key_is_rules():
    extractor = get_extractor(config.load({}))
    assert isinstance(extractor, RulesExtractor) and isinstance(extractor, Extractor)
    assert extractor.name == "rules"


def test_auto_with_key_is_claude_with_the_configured_model():
    settings = config.load({"ANTHROPIC_API_KEY": "k", "NEXUS_MODEL": "claude-haiku-4-5"})
    extractor = get_extractor(settings)
    assert isinstance(extractor, FallbackExtractor) and extractor.name == "claude"
    assert isinstance(extractor.primary, ClaudeExtractor)
    assert isinstance(extractor.fallback, RulesExtractor)
    assert extractor.primary.model == "claude-haiku-4-5"
    assert get_extractor(settings) is extractor


def test_rules_can_be_forced_with_a_key():
    settings = config.load({"ANTHROPIC_API_KEY": "k", "NEXUS_EXTRACTOR": "rules"})
    assert get_extractor(settings).name == "rules"


def test_cli_extracts_from_a_file(tmp_path, capsys):
    path = tmp_path / "conv.json"
    path.write_text(json.dumps(SEED), encoding="utf-8")
    assert cli_main([str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["extractor"] == "rules"
    assert out["prospect"]["nombre"] == "Juan Pérez"
    assert out["usage"] is None


def test_cli_reads_stdin(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(SEED)))
    assert cli_main(["--extractor", "rules", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["prospect"]["momento_optimo"] == "tibio"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected"),
        ('{"messages": []}', "expected"),
        ('{"messages": [{"role": "bot", "content": "x"}]}', "messages[0]"),
    ],
)
def test_cli_bad_input_is_one_line_and_status_2(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    assert cli_main([str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_missing_file_and_bad_flag(capsys):
    assert cli_main(["/nonexistent/conv.json"]) == 2
    assert cli_main(["--extractor", "gpt", "-"]) == 2
    assert cli_main(["--extractor", "claude", "-"]) == 2
    assert "ANTHROPIC_API_KEY" in capsys.readouterr().err.splitlines()[-1]


def test_cli_help_is_status_0(capsys):
    assert cli_main(["--help"]) == 0
    assert "nexus extract" in capsys.readouterr().out
