"""What Claude calls cost: the price table, and the report ``nexus cost`` prints.

Prices are USD per million tokens, for prompts up to 200k tokens (100k for Haiku 5.5; the
extractor's prompts are a few thousand).  A 5-minute cache write costs 1.25x the input price;
a cache read is listed per model.  Estimates only: the invoice is the truth.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .. import db

#: When :data:`PRICES` was read, and where.
PRICES_READ_ON = dt.date(2026, 12, 1)
PRICES_SOURCE = (
    "https://platform.claude.com/docs/en/about-claude/pricing and each model's overview page "
    "(https://platform.claude.com/docs/en/models/haiku-5-5/overview for Haiku 5.5)"
)


@dataclass(frozen=True)
class Price:
    """USD per million tokens of each kind."""

    input: float
    output: float
    cache_write: float  #: 5-minute cache write (1.25x input)
    cache_read: float

    def cost(self, usage: dict) -> float:
        """USD for ``usage`` (the four token counters of the Messages API)."""
        return (
            usage.get("input_tokens", 0) * self.input
            + usage.get("output_tokens", 0) * self.output
            + usage.get("cache_creation_input_tokens", 0) * self.cache_write
            + usage.get("cache_read_input_tokens", 0) * self.cache_read
        ) / 1_000_000


def _price(input: float, output: float, read_ratio: float = 0.1) -> Price:
    return Price(input, output, round(input * 1.25, 6), round(input * read_ratio, 6))


#: The one price table.  A model missing here is reported with tokens and no USD figure.
PRICES: dict[str, Price] = {
    "claude-haiku-5-5": _price(0.10, 0.50),
    "claude-sonnet-5-5": _price(2.00, 10.00, 0.05),
    "claude-opus-5-5": _price(4.00, 20.00, 0.05),
    "claude-fable-5-1": _price(10.00, 50.00, 0.025),
    "claude-mythos-5-1": _price(10.00, 50.00, 0.025),
    "claude-sonnet-5": _price(2.00, 10.00),
    "claude-opus-5": _price(5.00, 25.00),
    "claude-fable-5": _price(10.00, 50.00),
    "claude-mythos-5": _price(10.00, 50.00),
    "claude-opus-4-8": _price(5.00, 25.00),
    "claude-opus-4-7": _price(5.00, 25.00),
    "claude-opus-4-6": _price(5.00, 25.00),
    "claude-opus-4-5": _price(5.00, 25.00),
    "claude-opus-4-5-20251101": _price(5.00, 25.00),
    "claude-sonnet-4-6": _price(3.00, 15.00),
    "claude-sonnet-4-5": _price(3.00, 15.00),
    "claude-sonnet-4-5-20250929": _price(3.00, 15.00),
    "claude-haiku-4-5": _price(1.00, 5.00),
    "claude-haiku-4-5-20251001": _price(1.00, 5.00),
}


def estimate_usd(model: str, usage: dict) -> float | None:
    """USD for ``usage`` on ``model``; None when the model has no price in :data:`PRICES`."""
    price = PRICES.get(model)
    return None if price is None else price.cost(usage)


def cost_report(engine, since: dt.datetime) -> dict:
    """LLM calls since ``since``: counts, tokens by kind, cache-hit ratio, estimated USD.

    ``cache_hit_ratio`` is cache-read tokens over all input tokens (uncached, written, read);
    None without input.  ``usd`` totals the priced models; ``unpriced_models`` lists the rest.
    """
    kinds = db.TOKEN_KINDS
    models = []
    totals = {"calls": 0, "failed_calls": 0, **dict.fromkeys(kinds, 0)}
    usd = 0.0
    unpriced = []
    for row in db.llm_usage_by_model(engine, since):
        cost = estimate_usd(row["model"], row)
        if cost is None:
            unpriced.append(row["model"])
        else:
            usd += cost
        models.append({**row, "cache_hit_ratio": _hit_ratio(row), "usd": _round(cost)})
        for key in totals:
            totals[key] += row[key]
    return {
        "since": since.isoformat(),
        **totals,
        "cache_hit_ratio": _hit_ratio(totals),
        "usd": _round(usd),
        "unpriced_models": unpriced,
        "by_model": models,
        "prices_read_on": PRICES_READ_ON.isoformat(),
        "prices_source": PRICES_SOURCE,
    }


def _hit_ratio(usage: dict) -> float | None:
    read = usage["cache_read_input_tokens"]
    total = usage["input_tokens"] + usage["cache_creation_input_tokens"] + read
    return None if total == 0 else round(read / total, 4)


def _round(usd: float | None) -> float | None:
    return None if usd is None else round(usd, 6)
