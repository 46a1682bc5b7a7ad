"""The Claude extractor: one forced tool call through the anthropic SDK, validated on return.

Retries, and how SDK retries combine with the queue's
----------------------------------------------------
Two layers retry, and they split the work by how long the wait is.

* The SDK makes at most one quick retry of its own (``max_retries=1``) for a dropped
  connection, a timeout, a 408/409/429/5xx/529 — with its own short backoff (about 0.5 s)
  or a ``Retry-After`` of at most :data:`QUICK_RETRY_LIMIT` seconds.  This absorbs a blip
  without the row going through a failed attempt.
* A longer wait is never spent inside the worker: the pinned SDK would honour any
  ``Retry-After`` by sleeping, so a small middleware marks such a response
  ``x-should-retry: false`` and the SDK raises at once.  The error surfaces as
  :class:`ClaudeUnavailable` (a ``RetryableExtractionError``) carrying ``retry_after`` in
  seconds, and the queue's exponential backoff (``NEXUS_MIN_BACKOFF_MS`` ..
  ``NEXUS_MAX_BACKOFF_MS``, ``NEXUS_MAX_RETRIES`` attempts) does the long waiting; it
  should wait at least ``retry_after`` when that is set.

So one queue attempt costs at most 2 HTTP requests and about 2 x :data:`DEFAULT_TIMEOUT`
+ 2 s of wall time, and a row sees at most ``2 x (NEXUS_MAX_RETRIES + 1)`` requests.

Anything else is permanent (:class:`~nexus.errors.PermanentExtractionError`): 400, 401,
403, 404, 413 and other 4xx (another attempt sends the same request), and an answer
without the tool call, or whose ``nivel_interes`` is not a number, twice in a row.  Values
that are merely out of schema (interest 99, an unknown archetype) are not failures: they
are normalised away, so text in a conversation can never put them into the database.

Cost
----
The static prefix is ~2,600 characters of system instructions and ~1,400 of tool schema:
about 1,200-1,300 tokens, plus the API's own tool-use preamble (~300), so ~1,500-1,600
input tokens before the conversation.  It is marked ``cache_control: ephemeral``, but
Anthropic caches a prefix only from the model's minimum cacheable length (2,048-4,096
tokens for Haiku-class models), so at this size the marking costs nothing and may not
engage.  A typical widget conversation adds 100-200 tokens (the evaluation set's median
is ~300 characters; the budget caps it at :data:`CONVERSATION_BUDGET`); the answer is
~100-150 output tokens.  ``ExtractionResult.usage`` records the exact counts per row.
"""

from __future__ import annotations

import email.utils
import json
import time

import anthropic

from ..config import DEFAULT_MAX_EXTRACT_CHARS, DEFAULT_MODEL
from ..errors import PermanentExtractionError, RetryableExtractionError
from .base import ExtractionResult, Messages, newest
from .prompt import SYSTEM_PROMPT, TOOL, TOOL_NAME
from .prospect import Prospect, normalise

DEFAULT_TIMEOUT = 30.0  #: seconds per HTTP attempt (connect + read)
SDK_MAX_RETRIES = 1  #: quick retries made inside the SDK per queue attempt
QUICK_RETRY_LIMIT = 2.0  #: seconds; a Retry-After above this is left to the queue's backoff
MAX_TOKENS = 600  #: output tokens; the tool input is ~100-150 tokens
CONVERSATION_BUDGET = DEFAULT_MAX_EXTRACT_CHARS  #: characters of conversation sent (~6-8k tokens)
ANSWER_ATTEMPTS = 2  #: calls per extraction when the answer lacks the tool call
_RETRYABLE_STATUS = frozenset({408, 409, 429})


class ClaudeUnavailable(RetryableExtractionError):
    """Claude could not answer now.  ``retry_after``: seconds the API asked us to wait, or None."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class _InvalidAnswer(Exception):
    """The answer lacked a usable tool call; worth one more call."""


def retry_after(headers) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date), or None."""
    try:
        return max(0.0, float(headers.get("retry-after-ms")) / 1000)
    except (TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        return None if parsed is None else max(0.0, email.utils.mktime_tz(parsed) - time.time())


def leave_long_waits_to_the_queue(request, call_next):
    """SDK middleware: forbid the SDK's own retry when the API asks for a long wait."""
    response = call_next(request)
    wait = retry_after(response.headers)
    if wait is not None and wait > QUICK_RETRY_LIMIT:
        response.http_response.headers["x-should-retry"] = "false"
    return response


def render(messages: Messages, budget: int = CONVERSATION_BUDGET) -> str:
    """The conversation as one user turn: JSON-quoted lines of the newest ``budget`` characters.

    Quoting each message keeps visitor text visibly data, whatever it contains.  Which part of
    the conversation is read is :func:`~nexus.extraction.base.newest`'s choice, shared with the
    rules extractor: older messages are dropped whole, and the oldest one kept, if cut, keeps
    its end (marked ``(final)``).
    """
    usable = [m for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str)]
    kept = newest(usable, budget)
    first = usable[len(usable) - len(kept)] if kept else None
    cut = first is not None and len(kept[0]["content"]) < len(first["content"])
    lines = []
    for i, message in enumerate(kept):
        who = "visitante" if message.get("role") == "user" else "asistente"
        if i == 0 and cut:
            who += " (final)"
        lines.append(f"{who}: {json.dumps(message['content'], ensure_ascii=False)}")
    dropped = len(usable) - len(kept)
    note = [f"({dropped} mensajes anteriores omitidos)"] if dropped else []
    body = "\n".join(note + lines)
    return f"<conversacion>\n{body}\n</conversacion>\nRegistra el prospecto con {TOOL_NAME}."


def _parse(response) -> Prospect:
    calls = [b for b in response.content if b.type == "tool_use" and b.name == TOOL_NAME]
    if not calls:
        raise _InvalidAnswer(f"no {TOOL_NAME} call (stop_reason={response.stop_reason})")
    if response.stop_reason == "max_tokens":
        raise _InvalidAnswer("answer cut off at max_tokens")
    data = calls[0].input
    if not isinstance(data, dict):
        raise _InvalidAnswer("tool input is not an object")
    interest = data.get("nivel_interes")
    if isinstance(interest, bool) or not isinstance(interest, int | float):
        raise _InvalidAnswer("nivel_interes is missing or not a number")
    return normalise(data)


def _classify(exc: anthropic.APIError) -> Exception:
    if isinstance(exc, anthropic.APIConnectionError):  # includes APITimeoutError
        kind = "timed out" if isinstance(exc, anthropic.APITimeoutError) else "connection failed"
        return ClaudeUnavailable(f"Claude API {kind}")
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        detail = exc.api_message or exc.type or "no detail"
        if status in _RETRYABLE_STATUS or status >= 500:
            wait = retry_after(exc.response.headers)
            return ClaudeUnavailable(
                f"Claude API {status}: {detail}", status=status, retry_after=wait
            )
        return PermanentExtractionError(f"Claude API {status}: {detail}")
    return PermanentExtractionError(f"Claude API error: {exc}")


class ClaudeExtractor:
    """Extraction by Claude.  ``ANTHROPIC_BASE_URL`` is read by the SDK itself."""

    name = "claude"

    def __init__(
        self,
        api_key: str | None,
        model: str = DEFAULT_MODEL,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = SDK_MAX_RETRIES,
        budget: int = CONVERSATION_BUDGET,
    ):
        self.model = model
        self.budget = budget
        self.client = anthropic.Anthropic(
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            middleware=[leave_long_waits_to_the_queue],
        )

    def request(self, messages: Messages) -> dict:
        """The keyword arguments of ``messages.create`` for this conversation."""
        return {
            "model": self.model,
            "max_tokens": MAX_TOKENS,
            "system": [
                {"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}
            ],
            "tools": [TOOL],
            "tool_choice": {"type": "tool", "name": TOOL_NAME},
            "messages": [{"role": "user", "content": render(messages, self.budget)}],
        }

    def extract(self, messages: Messages) -> ExtractionResult:
        request = self.request(messages)
        usage = {"model": self.model, "input_tokens": 0, "output_tokens": 0,
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}  # fmt: skip
        problem = None
        for _ in range(ANSWER_ATTEMPTS):
            try:
                response = self.client.messages.create(**request)
            except anthropic.APIError as exc:
                raise _classify(exc) from exc
            usage["model"] = response.model or self.model
            for key in (
                "input_tokens",
                "output_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
            ):
                usage[key] += getattr(response.usage, key, None) or 0
            try:
                return ExtractionResult(_parse(response), usage)
            except _InvalidAnswer as exc:
                problem = exc
        error = PermanentExtractionError(f"Claude's answer was unusable twice: {problem}")
        error.usage = usage
        raise error
