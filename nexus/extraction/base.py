"""The extractor interface: a conversation in, an :class:`ExtractionResult` out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .prospect import Prospect

#: A conversation as the widget sends it: ``[{"role": "user"|"assistant", "content": str}]``.
Messages = list[dict]


@dataclass(frozen=True)
class ExtractionResult:
    """A validated prospect, plus what producing it cost.

    ``usage`` is None for the rules extractor.  For Claude it holds ``model``,
    ``input_tokens``, ``output_tokens``, ``cache_creation_input_tokens`` and
    ``cache_read_input_tokens`` (tokens, summed over the calls this extraction made).
    """

    prospect: Prospect
    usage: dict | None = None
    #: One dict per LLM call made, failed ones included: ``model``, ``outcome`` (``ok``,
    #: ``refusal``, ``max_tokens``, ``invalid``, ``http_429``, ``timeout`` ...) and the four
    #: token counters of ``usage``.  Empty for the rules extractor.
    calls: tuple[dict, ...] = ()
    #: What produced ``prospect`` when it is not the extractor that was asked (a fallback):
    #: its name, and why (``"fallback: refusal"``).  None otherwise.
    extractor: str | None = None
    reason: str | None = None


@runtime_checkable
class Extractor(Protocol):
    """Anything with a ``name`` and an ``extract`` method.

    ``extract`` raises :class:`~nexus.errors.RetryableExtractionError` for a transient
    failure and :class:`~nexus.errors.PermanentExtractionError` for one another attempt
    will not fix; it never returns an out-of-schema prospect.
    """

    name: str

    def extract(self, messages: Messages) -> ExtractionResult: ...


def visitor_texts(messages: Messages) -> list[str]:
    """The visitor's (``role == "user"``) message texts, in order; malformed items skipped."""
    return [
        m["content"]
        for m in messages
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)
    ]


def newest(messages: Messages, max_chars: int) -> Messages:
    """The newest messages whose contents total at most ``max_chars`` characters.

    Each message also counts one character (its separator), so empty messages cannot slip
    past the bound.  Older messages are dropped whole; the oldest one kept may be cut, keeping
    its end (a copy: ``messages`` is not modified).  Malformed items (not a dict with a string
    ``content``) are skipped.  This is what bounds the cost of an extraction.
    """
    kept: list[dict] = []
    left = max_chars
    for message in reversed(messages):
        if left <= 0:
            break
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            continue
        content = message["content"]
        if len(content) >= left:
            if left > 1:
                kept.append({**message, "content": content[len(content) - left + 1 :]})
            break
        kept.append(message)
        left -= len(content) + 1
    kept.reverse()
    return kept
