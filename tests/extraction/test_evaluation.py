"""The labelled evaluation set: its coverage, and the rules extractor's scores on it."""

from collections import Counter

import pytest

from nexus.extraction import ARQUETIPOS, MOMENTOS, OBJECIONES, momento_for
from nexus.extraction.evaluation import evaluate, load
from nexus.extraction.rules import RulesExtractor

#: The issue's targets for the rules extractor (fractions; objeciones is F1).
TARGETS = {
    "nombre": 0.95,
    "email": 0.95,
    "telefono": 0.95,
    "arquetipo": 0.80,
    "momento_optimo": 0.85,
    "objeciones_f1": 0.85,
}
CASES = load()


def test_set_covers_what_the_issue_asks():
    assert len(CASES) >= 60
    assert len({c["id"] for c in CASES}) == len(CASES)
    labels = [c["expected"] for c in CASES]
    assert set(ARQUETIPOS) <= {x["arquetipo"] for x in labels}
    assert set(MOMENTOS) == {x["momento_optimo"] for x in labels}
    objections = Counter(o for x in labels for o in x["objeciones"])
    assert all(objections[o] >= 5 for o in OBJECIONES)
    tags = Counter(t for c in CASES for t in c["tags"])
    assert tags["injection"] + tags["prompt_injection"] >= 3 and tags["hostil"] >= 3


def test_labels_follow_the_rubric():
    for case in CASES:
        x = case["expected"]
        assert x["momento_optimo"] == momento_for(x["nivel_interes"]), case["id"]


@pytest.mark.slow
def test_rules_extractor_meets_the_targets():
    scores, misses = evaluate(RulesExtractor(), CASES)
    failing = {f: round(s, 3) for f, s in scores.items() if s < TARGETS[f]}
    assert not failing, (failing, misses)
