"""Prospect extraction: a conversation in, a validated :class:`Prospect` out.

Two extractors share one interface (:class:`Extractor`): ``rules`` (offline, the default
without a key) and ``claude`` (the anthropic SDK).  :func:`get_extractor` picks one from the
settings (``NEXUS_EXTRACTOR``; ``auto`` = claude when ``ANTHROPIC_API_KEY`` is set).
"""

from __future__ import annotations

from functools import lru_cache

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


def get_extractor(settings: Settings) -> Extractor:
    """The extractor ``settings.effective_extractor`` names; one instance per configuration."""
    return _extractor(
        settings.effective_extractor,
        settings.anthropic_api_key,
        settings.model,
        settings.max_extract_chars,
        settings.phone_region,
    )


@lru_cache(maxsize=8)
def _extractor(
    kind: str, api_key: str | None, model: str, max_chars: int, phone_region: str
) -> Extractor:
    if kind == "claude":
        from .claude import ClaudeExtractor

        return ClaudeExtractor(api_key, model, budget=max_chars)
    from .rules import RulesExtractor

    return RulesExtractor(max_chars=max_chars, phone_region=phone_region)
