"""Prospect extraction: a conversation in, a validated :class:`Prospect` out.

Two extractors share one interface (:class:`Extractor`): ``rules`` (offline, the default
without a key) and ``claude`` (the anthropic SDK).  :func:`get_extractor` picks one from the
settings (``NEXUS_EXTRACTOR``; ``auto`` = claude when ``ANTHROPIC_API_KEY`` is set).
"""

from __future__ import annotations

from functools import lru_cache, partial

from ..config import Settings
from .base import ExtractionResult, Extractor
from .cli import cli_main
from .prospect import ARQUETIPOS, MOMENTOS, OBJECIONES, Prospect, momento_for, normalise

__all__ = [
    "ARQUETIPOS",
    "MOMENTOS",
    "OBJECIONES",
    "ExtractionResult",
    "Extractor",
    "Prospect",
    "cli_main",
    "get_extractor",
    "momento_for",
    "normalise",
]


def get_extractor(settings: Settings, engine=None) -> Extractor:
    """The extractor ``settings.effective_extractor`` names; one instance per configuration.

    Claude comes wrapped in a :class:`~.fallback.FallbackExtractor` (``NEXUS_FALLBACK``,
    ``NEXUS_DAILY_TOKEN_BUDGET``).  The budget is read from ``llm_calls`` through ``engine``;
    without an engine (``nexus extract``) there is no budget to enforce.  Both extractors read
    the newest ``NEXUS_MAX_EXTRACT_CHARS`` characters; the rules parse phones for
    ``NEXUS_PHONE_REGION``.
    """
    return _extractor(
        settings.effective_extractor,
        settings.anthropic_api_key,
        settings.model,
        settings.fallback,
        settings.daily_token_budget if engine is not None else None,
        engine,
        settings.max_extract_chars,
        settings.phone_region,
    )


@lru_cache(maxsize=8)
def _extractor(
    kind: str,
    api_key: str | None,
    model: str,
    fallback: str,
    budget: int | None,
    engine,
    max_chars: int,
    phone_region: str,
) -> Extractor:
    from .rules import RulesExtractor

    rules = RulesExtractor(max_chars=max_chars, phone_region=phone_region)
    if kind != "claude":
        return rules
    from .claude import ClaudeExtractor
    from .fallback import FallbackExtractor

    tokens_today = None
    if budget is not None:
        from .. import db

        tokens_today = partial(db.tokens_today, engine)
    return FallbackExtractor(
        ClaudeExtractor(api_key, model, budget=max_chars, phone_region=phone_region),
        rules if fallback == "rules" else None,
        daily_token_budget=budget,
        tokens_today=tokens_today,
    )
