"""Scoring an extractor against the labelled set in ``tests/data/eval_conversations.json``.

Scores are fractions in 0..1: exact-match accuracy for ``nombre``, ``email``, ``telefono``,
``arquetipo`` and ``momento_optimo`` (a null label must be matched by null), and a micro-F1
over (conversation, objection) pairs for ``objeciones``.  Labels pass through
:func:`~nexus.extraction.prospect.normalise` first, so formatting is compared, not spelling.
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import Extractor
from .prospect import normalise

DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "eval_conversations.json"
EXACT_FIELDS = ("nombre", "email", "telefono", "arquetipo", "momento_optimo")
FIELDS = (*EXACT_FIELDS, "objeciones_f1")


def load(path: Path = DATA) -> list[dict]:
    """The labelled conversations: dicts with ``id``, ``messages`` and ``expected``."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)["conversations"]


def evaluate(extractor: Extractor, cases: list[dict]) -> tuple[dict[str, float], list[dict]]:
    """Per-field scores, and the misses as ``{id, field, expected, got}`` for reading."""
    hits = dict.fromkeys(EXACT_FIELDS, 0)
    tp = fp = fn = 0
    misses = []
    for case in cases:
        want = normalise(case["expected"]).to_dict()
        want["momento_optimo"] = case["expected"]["momento_optimo"]
        got = extractor.extract(case["messages"]).prospect.to_dict()
        for field in EXACT_FIELDS:
            if got[field] == want[field]:
                hits[field] += 1
            else:
                misses.append(
                    {"id": case["id"], "field": field, "expected": want[field], "got": got[field]}
                )
        want_o, got_o = set(want["objeciones"]), set(got["objeciones"])
        tp, fp, fn = tp + len(want_o & got_o), fp + len(got_o - want_o), fn + len(want_o - got_o)
        if want_o != got_o:
            misses.append(
                {
                    "id": case["id"],
                    "field": "objeciones",
                    "expected": sorted(want_o),
                    "got": sorted(got_o),
                }
            )
    scores = {field: hits[field] / len(cases) for field in EXACT_FIELDS}
    scores["objeciones_f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return scores, misses
