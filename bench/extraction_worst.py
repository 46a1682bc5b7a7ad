"""``make bench-extract``: the rules extractor's worst case per conversation.

Runs every adversarial conversation of ``tests/extraction/adversarial.py`` (1 MiB each by
default) through the rules extractor twice:

- at the default ``NEXUS_MAX_EXTRACT_CHARS`` (24,000): what a worker pays for the worst POST;
  the SPEC's target is <= 50 ms per conversation on 2 cores (median of ``--repeat`` runs);
- with the limit raised to the input's size, at n/4 and n characters: the growth ratio
  t(n) / t(n/4) of CPU time is ~4 for a linear pass (16 for a quadratic one).

Wall and CPU time are both printed: on a busy machine the wall time includes waiting for a
core, the CPU time does not.

Also prints the mean time on the labelled conversations (normal chats).  Prints numbers only;
figures taken on a loaded machine mean little.  ``--size`` shrinks the inputs for a quick run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nexus.config import DEFAULT_MAX_EXTRACT_CHARS  # noqa: E402
from nexus.extraction.evaluation import load  # noqa: E402
from nexus.extraction.rules import RulesExtractor  # noqa: E402
from tests.extraction.adversarial import corpus  # noqa: E402

TARGET_MS = 50.0  #: SPEC section 11, at the default limit


def _seconds(extractor: RulesExtractor, messages: list[dict], repeat: int) -> tuple[float, float]:
    """Median wall and CPU seconds of one extraction (equal on an idle machine)."""
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        extractor.extract(messages)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_048_576, help="characters per attack")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case at the default")
    args = parser.parse_args()

    default = RulesExtractor()
    raised = RulesExtractor(max_chars=args.size)
    big, quarter = corpus(args.size), corpus(args.size // 4)
    print(
        f"{'case':<18} {'default ms':>11} {'(cpu)':>7} {'n/4 ms':>9} {'n ms':>9} {'n : n/4':>8}"
        f"   (n = {args.size:,} chars; default limit {DEFAULT_MAX_EXTRACT_CHARS:,})"
    )
    worst_default, worst_cpu, worst_ratio = ("", 0.0), ("", 0.0), ("", 0.0)
    for name, messages in big.items():
        at_default, cpu = (x * 1000 for x in _seconds(default, messages, args.repeat))
        small = _seconds(raised, quarter[name], 1)[1] * 1000
        large = _seconds(raised, messages, 1)[1] * 1000
        ratio = large / small if small else float("inf")
        print(
            f"{name:<18} {at_default:11.1f} {cpu:7.1f} {small:9.1f} {large:9.1f} {ratio:8.1f}",
            flush=True,
        )
        worst_default = max(worst_default, (name, at_default), key=lambda x: x[1])
        worst_cpu = max(worst_cpu, (name, cpu), key=lambda x: x[1])
        worst_ratio = max(worst_ratio, (name, ratio), key=lambda x: x[1])

    cases = load()
    start = time.perf_counter()
    for case in cases:
        default.extract(case["messages"])
    normal = (time.perf_counter() - start) / len(cases) * 1000

    print()
    print(
        f"worst at the default limit: {worst_default[1]:.1f} ms wall ({worst_default[0]}), "
        f"{worst_cpu[1]:.1f} ms CPU ({worst_cpu[0]}); target <= {TARGET_MS:.0f} ms"
    )
    print(f"largest growth n/4 -> n:    {worst_ratio[1]:.1f}x ({worst_ratio[0]}); linear ~4x")
    print(f"labelled conversations:     {normal:.2f} ms mean over {len(cases)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
