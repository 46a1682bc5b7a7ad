"""Extraction cost is bounded and linear (SPEC section 9, issue 8 item 1).

Two guarantees, tested two ways:

- Bounded: both extractors read at most the newest ``NEXUS_MAX_EXTRACT_CHARS`` characters.
  Deterministic tests: what :func:`newest` keeps, and that the rules extractor's answer on a
  huge conversation is its answer on the kept part.
- Linear: no pattern backtracks super-linearly, even with the limit raised to 1 MiB.  Python's
  ``re`` counts no steps we could assert on, and these tests assert no timing (the machine is
  shared and load varies).  So each adversarial 1 MiB conversation simply has to finish: a
  linear pass takes about a second, while the quadratic patterns these tests caught took
  minutes to hours at this size ("a" x 80k alone took 12.7 s before the fix, ~30 min at
  1 MiB), so the suite's per-test timeout (pytest-timeout, 180 s) fails a regression instead
  of hanging.  ``make bench-extract`` prints the times and the growth ratio from n to 4n.
"""

import pytest

from nexus import config
from nexus.extraction import get_extractor
from nexus.extraction.base import newest
from nexus.extraction.rules import RulesExtractor
from tests.extraction.adversarial import corpus

MIB = 1_048_576
CASES = corpus(MIB)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_adversarial_mebibyte_finishes(name):
    # Given the limit raised to the input's size, when a 1 MiB attack is extracted
    result = RulesExtractor(max_chars=MIB).extract(CASES[name])
    # Then it finishes (a super-linear pattern would not, within the suite's timeout)
    # with a valid prospect
    assert 0 <= result.prospect.nivel_interes <= 10


def test_the_issue_reproduction_is_bounded_at_the_default_limit():
    # Given the issue's reproduction: a run of word characters without '@', 1 MiB long
    messages = [{"role": "user", "content": "hola, me llamo Juan Pérez " + "a" * MIB}]
    # When extracted with the default settings, it reads the newest 24,000 characters only
    extractor = get_extractor(config.load({}))
    assert extractor.max_chars == config.DEFAULT_MAX_EXTRACT_CHARS == 24_000
    assert extractor.extract(messages).prospect.nombre is None  # the name lies before the window


def test_newest_keeps_the_newest_characters():
    messages = [{"role": "user", "content": str(i) * 10} for i in range(10)]  # 10 chars each
    # 3 whole messages cost 33 (one separator each); the fourth keeps its last 5 (+1) of 6 left
    kept = newest(messages, 39)
    assert [m["content"] for m in kept] == ["66666", "7" * 10, "8" * 10, "9" * 10]
    assert sum(len(m["content"]) + 1 for m in kept) <= 39
    assert messages[6]["content"] == "6" * 10  # the input is not modified
    assert newest(messages, 1_000) == messages


def test_newest_bounds_empty_and_malformed_messages():
    messages = [{"role": "user", "content": ""}] * 5_000 + [None, {"role": "user"}, "x"]
    assert len(newest(messages, 1_000)) == 1_000
    assert newest([{"role": "user", "content": "abc"}], 1) == []
    assert newest([{"role": "user", "content": "abcdef"}], 4) == [
        {"role": "user", "content": "def"}
    ]


def test_rules_read_only_the_newest_characters():
    # Given a name and phone early, then enough chatter to push them out of the window
    early = [
        {"role": "user", "content": "me llamo Ana Ruiz, mi cel 3114567890"},
        {"role": "user", "content": "quiero saber más " * 200},
    ]
    late = [{"role": "user", "content": "no tengo tiempo"}]
    small = RulesExtractor(max_chars=1_000).extract(early + late).prospect
    large = RulesExtractor(max_chars=10_000).extract(early + late).prospect
    # Then with a small limit they are not read; with a larger one they are
    assert (small.nombre, small.telefono, small.objeciones) == (None, None, ("tiempo",))
    assert large.nombre == "Ana Ruiz" and large.telefono is not None


def test_the_limit_is_configured_and_validated():
    settings = config.load({"NEXUS_MAX_EXTRACT_CHARS": "1048576"})
    assert get_extractor(settings).max_chars == MIB
    claude = get_extractor(
        config.load({"ANTHROPIC_API_KEY": "k", "NEXUS_MAX_EXTRACT_CHARS": "5000"})
    )
    assert claude.primary.budget == 5_000 and claude.fallback.max_chars == 5_000
    for bad in ("0", "999", "1048577", "lots"):
        with pytest.raises(config.ConfigError, match="NEXUS_MAX_EXTRACT_CHARS"):
            config.load({"NEXUS_MAX_EXTRACT_CHARS": bad})
