"""``NEXUS_FALLBACK``: when Claude fails for good, the rules extractor answers instead.

A permanent Claude error -- a 400-class answer (bad request, revoked key, unknown model), a
refusal, an answer cut off or unusable twice -- would fail the row however often it is
retried.  :class:`FallbackExtractor` wraps the Claude extractor and, on such an error,
extracts the same conversation with the rules extractor; the result says so
(``extractor="rules"``, ``reason="fallback: refusal"``) and the row records both.  Transient
errors (429, 5xx, timeouts) are not fallen back on: the queue retries them.

``NEXUS_DAILY_TOKEN_BUDGET``: once today's (UTC) input + output tokens in ``llm_calls``
reach the budget, Claude is not called at all and the fallback answers, until the next day.
With ``NEXUS_FALLBACK=none`` both cases fail the row with the reason instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..errors import PermanentExtractionError
from .base import ExtractionResult, Extractor, Messages

log = logging.getLogger(__name__)

BUDGET_SPENT = "budget spent"


class FallbackExtractor:
    """``primary`` (Claude), falling back to ``fallback`` (rules, or None for no fallback).

    ``tokens_today`` returns the tokens spent since 00:00 UTC; it is asked before every
    extraction when ``daily_token_budget`` is set.
    """

    def __init__(
        self,
        primary: Extractor,
        fallback: Extractor | None,
        *,
        daily_token_budget: int | None = None,
        tokens_today: Callable[[], int] | None = None,
    ):
        if daily_token_budget is not None and tokens_today is None:
            raise ValueError("a daily token budget needs tokens_today")
        self.primary = primary
        self.fallback = fallback
        self.daily_token_budget = daily_token_budget
        self.tokens_today = tokens_today
        self.name = primary.name

    def budget_spent(self) -> bool:
        """True once today's tokens reach ``daily_token_budget`` (never without a budget)."""
        if self.daily_token_budget is None:
            return False
        return self.tokens_today() >= self.daily_token_budget

    def extract(self, messages: Messages) -> ExtractionResult:
        if self.budget_spent():
            error = PermanentExtractionError(
                f"daily token budget of {self.daily_token_budget} spent", reason=BUDGET_SPENT
            )
            return self._fall_back(messages, error)
        try:
            return self.primary.extract(messages)
        except PermanentExtractionError as exc:
            return self._fall_back(messages, exc)

    def _fall_back(self, messages: Messages, error: PermanentExtractionError) -> ExtractionResult:
        if self.fallback is None:
            raise error
        log.warning("%s failed (%s): extracting with %s", self.name, error, self.fallback.name)
        result = self.fallback.extract(messages)
        return ExtractionResult(
            result.prospect,
            usage=getattr(error, "usage", None) if error.calls else None,
            calls=error.calls,
            extractor=self.fallback.name,
            reason=f"fallback: {error.reason}",
        )
