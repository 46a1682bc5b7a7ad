"""``make eval``: score every extractor that can run on the labelled set.

Prints a per-field table (exact-match accuracy for nombre, email, telefono, arquetipo,
momento_optimo; micro-F1 for objeciones), per extractor, overall, on the two held-out
batches and on the ``blind`` to ``blind4`` batches (written without looking at the rules;
``blind`` to ``blind3`` were then read to fix them, ``blind4`` has not been), and writes
``bench/results/eval.json`` as ``{extractor: {field: score}}`` (overall scores, fractions
0..1).  Claude runs only when ``ANTHROPIC_API_KEY`` is set; its
token usage is totalled so the cost of a call can be read off.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nexus import config  # noqa: E402
from nexus.errors import ExtractionError  # noqa: E402
from nexus.extraction.evaluation import FIELDS, evaluate, load  # noqa: E402
from nexus.extraction.rules import RulesExtractor  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "eval.json"
SPLITS = ("all", "holdout", "holdout2", "blind", "blind2", "blind3", "blind4")


class _Metered:
    """Wraps an extractor to total its token usage and survive a failed call."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.calls, self.failures, self.tokens = 0, 0, {}

    def extract(self, messages):
        from nexus.extraction import ExtractionResult, Prospect

        self.calls += 1
        try:
            result = self.inner.extract(messages)
        except ExtractionError as exc:
            self.failures += 1
            print(f"  {self.name}: {exc}", file=sys.stderr)
            return ExtractionResult(Prospect())
        for key, value in (result.usage or {}).items():
            if isinstance(value, int):
                self.tokens[key] = self.tokens.get(key, 0) + value
        return result


def extractors() -> list:
    found = [RulesExtractor()]
    # Only the key and model matter here: every extractor that can run is scored.
    env = {k: os.environ.get(k, "") for k in ("ANTHROPIC_API_KEY", "NEXUS_MODEL")}
    settings = config.load(env)
    if settings.anthropic_api_key:
        from nexus.extraction.claude import ClaudeExtractor

        found.append(ClaudeExtractor(settings.anthropic_api_key, settings.model))
    else:
        print("(claude skipped: ANTHROPIC_API_KEY is not set)\n")
    return found


def main() -> int:
    cases = load()
    results = {}
    runnable = extractors()
    header = f"{'extractor':<10} {'cases':<14}" + "".join(f"{f:>15}" for f in FIELDS)
    print(header)
    print("-" * len(header))
    for extractor in runnable:
        metered = _Metered(extractor)
        for split in SPLITS:
            subset = cases if split == "all" else [c for c in cases if split in c["tags"]]
            start = time.perf_counter()
            scores, _ = evaluate(metered, subset)
            elapsed = time.perf_counter() - start
            if split == "all":
                results[extractor.name] = {f: round(s, 4) for f, s in scores.items()}
                per_call = elapsed / len(subset) * 1000
            label = f"{split} ({len(subset)})"
            print(
                f"{extractor.name:<10} {label:<14}" + "".join(f"{scores[f]:>15.3f}" for f in FIELDS)
            )
        note = f"  {per_call:.2f} ms/conversation"
        if metered.tokens:
            note += "; tokens per call: " + ", ".join(
                f"{k}={v / metered.calls:.0f}" for k, v in metered.tokens.items()
            )
        if metered.failures:
            note += f"; {metered.failures} failed calls scored as empty"
        print(note)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
