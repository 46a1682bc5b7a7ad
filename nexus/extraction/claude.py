"""The Claude extractor: one structured-output call through the anthropic SDK, validated on return.

Request shape
-------------
Every model gets the same request: the conversation as one user turn, the system
instructions marked for the prompt cache, and the SDK's structured outputs
(``output_config.format``, a JSON schema: :data:`~.prompt.OUTPUT_FORMAT`).  Forced tool use
is not used: Sonnet 5.5, Opus 5.5, Fable 5.1 and Mythos 5.1 reject ``tool_choice`` "tool"
with a 400.  What differs per model is thinking (:func:`profile_for`): where the model can
turn it off (Haiku 5.5, Opus 5, the 4.x models) it is off and ``max_tokens`` is
:data:`ANSWER_MAX_TOKENS`; where it cannot (Opus 5.5, Sonnet 5.x, Fable, Mythos) effort is
``low`` and ``max_tokens`` is :data:`THINKING_MAX_TOKENS`, room for the thinking *and* the
answer (thinking tokens count toward ``max_tokens``; the cap is a ceiling, not a price).

Outcomes of one call
--------------------
* ``end_turn`` with a JSON object whose ``nivel_interes`` is a number: the answer, made safe
  by :func:`~.prospect.normalise` (the schema subset enforces no ranges, and out-of-schema
  values are normalised away, so text in a conversation can never put them in the database).
* ``refusal``: permanent at once (:class:`ClaudeRefused`); asking again costs a second call
  for the same answer.
* ``max_tokens``: permanent at once (:class:`ClaudeTruncated`); the same request would be cut
  again.
* Anything else unusable (not JSON, no number): asked again once, then permanent.
Permanent errors are what ``NEXUS_FALLBACK`` turns into a rules extraction
(:class:`~.fallback.FallbackExtractor`).

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
  ``NEXUS_MAX_BACKOFF_MS``, ``NEXUS_MAX_RETRIES`` attempts) does the long waiting, at least
  ``retry_after`` when that is set.

400, 401, 403, 404, 413 and other 4xx are permanent (another attempt sends the same request).

Cost (see :mod:`.pricing` for the prices and the README for a worked figure)
----
The fixed prefix -- ~2,800 characters of system instructions plus the ~1,400-character
schema and the API's own structured-output preamble -- is about 2,000 input tokens with the
tokenizer of Claude 4.7 and later (Haiku 5.5 counts ~30% more tokens than Haiku 4.5 for the
same text).  Haiku 5.5 caches prompts from 512 tokens, so the prefix *is* cached: the first
call in five minutes writes it (1.25x the input price), the others read it (0.1x).  A typical
widget conversation adds 100-200 tokens (the evaluation set's median is ~300 characters;
:data:`CONVERSATION_BUDGET` caps it); the answer is ~100-150 output tokens without thinking.
At Haiku 5.5's prices that is ~$0.00009 per call with the prefix read from the cache,
$0.00032 when it is written, so ~$0.0002 per conversation at two paid calls.  Every call's
exact counts are recorded in ``llm_calls``; ``nexus cost`` prices them.
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass

import anthropic

from ..config import DEFAULT_MAX_EXTRACT_CHARS, DEFAULT_MODEL
from ..db import TOKEN_KINDS
from ..errors import PermanentExtractionError, RetryableExtractionError
from .base import ExtractionResult, Messages, newest
from .prompt import OUTPUT_FORMAT, SYSTEM_PROMPT
from .prospect import DEFAULT_PHONE_REGION, Prospect, normalise

DEFAULT_TIMEOUT = 60.0  #: seconds per HTTP attempt (connect + read); thinking models are slower
SDK_MAX_RETRIES = 1  #: quick retries made inside the SDK per queue attempt
QUICK_RETRY_LIMIT = 2.0  #: seconds; a Retry-After above this is left to the queue's backoff
ANSWER_MAX_TOKENS = 1_024  #: output tokens without thinking; the answer is ~100-150
THINKING_MAX_TOKENS = (
    16_000  #: output tokens with thinking at low effort (the SDK's non-streaming limit is ~21k)
)
CONVERSATION_BUDGET = DEFAULT_MAX_EXTRACT_CHARS  #: characters of conversation sent (~6-10k tokens)
ANSWER_ATTEMPTS = 2  #: calls per extraction when the answer is unusable (not on refusal)
_RETRYABLE_STATUS = frozenset({408, 409, 429})


@dataclass(frozen=True)
class ModelProfile:
    """How to ask one model: its thinking setting, effort, and the output room it needs."""

    thinking: dict | None  #: the ``thinking`` parameter, or None to leave the model's default
    effort: str | None  #: ``output_config.effort``, or None where the model has no effort
    max_tokens: int


#: Thinking off, room for the answer only.  Haiku 5.5 and Opus 5 accept "disabled" at
#: effort low/medium/high; their default effort is medium, so low is set explicitly.
NO_THINKING = ModelProfile({"type": "disabled"}, "low", ANSWER_MAX_TOKENS)
#: The 4.x models think only when asked; Haiku/Sonnet 4.5 have no effort parameter.
NO_THINKING_4X = ModelProfile({"type": "disabled"}, None, ANSWER_MAX_TOKENS)
#: Models that always think (or think by default and cannot be told not to): least effort,
#: and room for the thinking as well as the answer.
THINKING = ModelProfile(None, "low", THINKING_MAX_TOKENS)

_PROFILES = {
    "claude-haiku-5-5": NO_THINKING,
    "claude-opus-5": NO_THINKING,
    "claude-opus-4-8": NO_THINKING_4X,
    "claude-opus-4-7": NO_THINKING_4X,
    "claude-opus-4-6": NO_THINKING_4X,
    "claude-sonnet-4-6": NO_THINKING_4X,
    "claude-haiku-4-5": NO_THINKING_4X,
    "claude-haiku-4-5-20251001": NO_THINKING_4X,
    "claude-opus-4-5": NO_THINKING_4X,
    "claude-opus-4-5-20251101": NO_THINKING_4X,
    "claude-sonnet-4-5": NO_THINKING_4X,
    "claude-sonnet-4-5-20250929": NO_THINKING_4X,
}


def profile_for(model: str) -> ModelProfile:
    """The request settings for ``model``; any other model is treated as always thinking,
    which every current model accepts."""
    return _PROFILES.get(model, THINKING)


class ClaudeUnavailable(RetryableExtractionError):
    """Claude could not answer now.  ``retry_after``: seconds the API asked us to wait, or None."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        reason: str | None = None,
    ):
        super().__init__(message, reason=reason)
        self.status = status
        self.retry_after = retry_after


class ClaudeRefused(PermanentExtractionError):
    """Claude declined to answer (``stop_reason: "refusal"``)."""


class ClaudeTruncated(PermanentExtractionError):
    """The answer was cut off at ``max_tokens``."""


#: Stop reasons that another identical call would repeat: permanent after one call.
_FINAL_STOPS = {
    "refusal": (ClaudeRefused, "Claude refused to answer"),
    "max_tokens": (ClaudeTruncated, "Claude's answer was cut off at max_tokens"),
    "model_context_window_exceeded": (
        ClaudeTruncated,
        "Claude's answer was cut off at the context window",
    ),
}


class _InvalidAnswer(Exception):
    """The answer was not a usable JSON object; worth one more call."""


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
    return f"<conversacion>\n{body}\n</conversacion>\nRegistra el prospecto."


def _answer_text(response) -> str:
    return "".join(b.text for b in response.content if b.type == "text")


def _parse(response, phone_region: str = DEFAULT_PHONE_REGION) -> Prospect:
    text = _answer_text(response).strip()
    try:
        data = json.loads(text)
    except ValueError:
        raise _InvalidAnswer(f"answer is not JSON (stop_reason={response.stop_reason})") from None
    if not isinstance(data, dict):
        raise _InvalidAnswer("answer is not a JSON object")
    interest = data.get("nivel_interes")
    if isinstance(interest, bool) or not isinstance(interest, int | float):
        raise _InvalidAnswer("nivel_interes is missing or not a number")
    return normalise(data, phone_region=phone_region)


def _status_reason(status: int) -> str:
    return f"http {status}"


def _classify(exc: anthropic.APIError) -> Exception:
    if isinstance(exc, anthropic.APIConnectionError):  # includes APITimeoutError
        kind = "timed out" if isinstance(exc, anthropic.APITimeoutError) else "connection failed"
        return ClaudeUnavailable(f"Claude API {kind}", reason=kind)
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        detail = exc.api_message or exc.type or "no detail"
        if status in _RETRYABLE_STATUS or status >= 500:
            wait = retry_after(exc.response.headers)
            return ClaudeUnavailable(
                f"Claude API {status}: {detail}",
                status=status,
                retry_after=wait,
                reason=_status_reason(status),
            )
        return PermanentExtractionError(
            f"Claude API {status}: {detail}", reason=_status_reason(status)
        )
    return PermanentExtractionError(f"Claude API error: {exc}", reason="api error")


def _outcome_of_error(exc: anthropic.APIError) -> str:
    if isinstance(exc, anthropic.APITimeoutError):
        return "timeout"
    if isinstance(exc, anthropic.APIConnectionError):
        return "connection"
    if isinstance(exc, anthropic.APIStatusError):
        return f"http_{exc.status_code}"
    return "error"


def _call(model: str, outcome: str, usage=None) -> dict:
    """One row of ``llm_calls``: the model, what happened, and the tokens the API reported."""
    return {
        "model": model,
        "outcome": outcome,
        **{kind: (getattr(usage, kind, None) or 0) for kind in TOKEN_KINDS},
    }


def total_usage(model: str, calls) -> dict:
    """The four token counters summed over ``calls`` (the row's ``usage``)."""
    usage = {"model": model, **dict.fromkeys(TOKEN_KINDS, 0)}
    for call in calls:
        usage["model"] = call["model"]
        for kind in TOKEN_KINDS:
            usage[kind] += call[kind]
    return usage


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
        phone_region: str = DEFAULT_PHONE_REGION,
    ):
        self.model = model
        self.profile = profile_for(model)
        self.budget = budget
        self.phone_region = phone_region
        self.client = anthropic.Anthropic(
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            middleware=[leave_long_waits_to_the_queue],
        )

    def request(self, messages: Messages) -> dict:
        """The keyword arguments of ``messages.create`` for this conversation."""
        output_config: dict = {"format": OUTPUT_FORMAT}
        if self.profile.effort is not None:
            output_config["effort"] = self.profile.effort
        request = {
            "model": self.model,
            "max_tokens": self.profile.max_tokens,
            "system": [
                {"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}
            ],
            "output_config": output_config,
            "messages": [{"role": "user", "content": render(messages, self.budget)}],
        }
        if self.profile.thinking is not None:
            request["thinking"] = self.profile.thinking
        return request

    def extract(self, messages: Messages) -> ExtractionResult:
        request = self.request(messages)
        calls: list[dict] = []
        problem = None
        for _ in range(ANSWER_ATTEMPTS):
            try:
                response = self.client.messages.create(**request)
            except anthropic.APIError as exc:
                calls.append(_call(self.model, _outcome_of_error(exc)))
                error = _classify(exc)
                error.calls = tuple(calls)
                error.usage = total_usage(self.model, calls)
                raise error from exc
            model = response.model or self.model
            stop = response.stop_reason
            if stop in _FINAL_STOPS:
                calls.append(_call(model, stop, response.usage))
                kind, what = _FINAL_STOPS[stop]
                error = kind(what, reason=stop.replace("_", " "), calls=calls)
                error.usage = total_usage(self.model, calls)
                raise error
            try:
                prospect = _parse(response, self.phone_region)
            except _InvalidAnswer as exc:
                calls.append(_call(model, "invalid", response.usage))
                problem = exc
                continue
            calls.append(_call(model, "ok", response.usage))
            return ExtractionResult(prospect, total_usage(self.model, calls), tuple(calls))
        error = PermanentExtractionError(
            f"Claude's answer was unusable twice: {problem}", reason="unusable answer", calls=calls
        )
        error.usage = total_usage(self.model, calls)
        raise error
