"""A local stand-in for the Anthropic Messages API, shared by the Claude tests.

:class:`ClaudeAPI` answers ``POST /v1/messages`` the way the real API does for the model a
request names, as far as the extractor can tell the difference (SPEC section 10):

* structured outputs (``output_config.format`` json_schema) for every model: the answer is a
  text block holding JSON; without a format or a tool the model answers in prose;
* forced tool use (``tool_choice`` "tool" / "any") is a 400 for Sonnet/Opus/Fable/Mythos 5.x;
* thinking: the 5.x models think by default and thinking counts toward ``max_tokens`` (too
  little room: ``stop_reason: "max_tokens"``); Opus 5.5, Fable and Mythos 5.x cannot turn it
  off (``thinking: disabled`` is a 400); budgeted thinking is a 400 on every 5.x model;
* a model id the pinned SDK does not list is a 404;
* prompt caching from each model's minimum cacheable length (512 tokens for Haiku 5.5): the
  first request with a marked prefix writes it, later ones read it;
* usage in every answer.
A test scripts anything else -- refusals, 429 with ``Retry-After``, 5xx, garbage, a hang --
with :meth:`ClaudeAPI.script`; a script returning None lets the emulation answer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from pytest_httpserver import HTTPServer
from werkzeug import Response

from nexus.config import DEFAULT_MODEL, known_models

#: What a good answer registers for the seed's sample conversation.
GOOD_INPUT = {
    "nombre": "Juan Pérez",
    "email": None,
    "telefono": None,
    "ocupacion": None,
    "nivel_interes": 7,
    "objeciones": [],
    "rechazo": False,
    "arquetipo": "profesional_vision",
}

#: Model families that reject forced tool use (their "What's new" pages).
NO_FORCED_TOOL = ("claude-sonnet-5", "claude-opus-5", "claude-fable-5", "claude-mythos-5")
#: Models whose thinking cannot be turned off.
ALWAYS_THINKING = ("claude-opus-5-5", "claude-fable-5", "claude-mythos-5")
#: Minimum cacheable prompt, tokens.
MIN_CACHEABLE = {"claude-haiku-5-5": 512, "claude-haiku-4-5": 4096}
DEFAULT_MIN_CACHEABLE = 1024
CHARS_PER_TOKEN = 2.5  #: Spanish text with the tokenizer of Claude 4.7 and later (approx.)
THINKING_TOKENS = {"low": 300, "medium": 1500, "high": 4000}  #: emulated thinking per effort
ANSWER_TOKENS = 90  #: output tokens of an emulated answer


def _tokens(text: str) -> int:
    return max(1, round(len(text) / CHARS_PER_TOKEN))


def answer(
    data=None,
    *,
    text=None,
    stop_reason="end_turn",
    model=DEFAULT_MODEL,
    input_tokens=1500,
    output_tokens=90,
    cache_read=0,
    cache_write=0,
    thinking: str | None = None,
):
    """A Messages API response body: ``data`` as a structured-output JSON text block, or
    ``text`` as given; a thinking block first when ``thinking`` is set."""
    content = []
    if thinking is not None:
        content.append({"type": "thinking", "thinking": thinking, "signature": "sig"})
    body = text if text is not None else json.dumps(data, ensure_ascii=False)
    if stop_reason != "refusal" or body:
        content.append({"type": "text", "text": body})
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
        },
    }


def answer_response(data=None, **kwargs) -> Response:
    return Response(json.dumps(answer(data, **kwargs)), content_type="application/json")


def refusal(**kwargs) -> Response:
    """A refusal: ``stop_reason: "refusal"``, no answer, the tokens still billed."""
    kwargs.setdefault("output_tokens", 5)
    return answer_response(text="", stop_reason="refusal", **kwargs)


def error(status, kind="api_error", headers=None, message=None) -> Response:
    body = {"type": "error", "error": {"type": kind, "message": message or f"stub {kind}"}}
    return Response(
        json.dumps(body), status=status, headers=headers or {}, content_type="application/json"
    )


def invalid_request(message: str) -> Response:
    return error(400, "invalid_request_error", message=message)


class ClaudeAPI:
    """The stub server.  ``requests`` holds every request body received, in order."""

    def __init__(self):
        self.server = HTTPServer(threaded=True)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        #: Set at teardown: handlers that hold an answer back let go.
        self.closing = threading.Event()
        #: What the emulated model registers (a test may change it).
        self.prospect = dict(GOOD_INPUT)
        self.behaviour: Callable[[int, dict], Response | None] = lambda n, body: None
        self._cached: set[str] = set()
        self.server.expect_request("/v1/messages", method="POST").respond_with_handler(self._handle)

    # -- the test's side ------------------------------------------------------------------

    def script(self, behaviour: Callable[[int, dict], Response | None]) -> None:
        """``behaviour(n, body)`` answers request number ``n`` (from 1); None = emulate."""
        self.behaviour = behaviour

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    @property
    def url(self) -> str:
        return self.server.url_for("/").rstrip("/")

    def start(self) -> ClaudeAPI:
        self.server.start()
        return self

    def stop(self) -> None:
        self.closing.set()
        self.server.clear()
        if self.server.is_running():
            self.server.stop()

    # -- the API's side -------------------------------------------------------------------

    def _handle(self, request):
        body = request.get_json()
        with self.lock:
            self.requests.append(body)
            n = len(self.requests)
        scripted = self.behaviour(n, body)
        return scripted if scripted is not None else self.emulate(body)

    def emulate(self, body: dict) -> Response:
        model = body.get("model", "")
        if model not in known_models()[0]:
            return error(404, "not_found_error", message=f"model: {model}")
        choice = (body.get("tool_choice") or {}).get("type")
        if choice in ("tool", "any") and model.startswith(NO_FORCED_TOOL):
            return invalid_request(
                'tool_choice: type "tool" and "any" are not supported for this model'
            )
        thinking = (body.get("thinking") or {}).get("type")
        effort = (body.get("output_config") or {}).get("effort") or "medium"
        five = model.startswith(("claude-haiku-5", *NO_FORCED_TOOL))
        if thinking == "enabled" and five:
            return invalid_request('"thinking.type.enabled" is not supported for this model')
        if thinking == "disabled" and (
            model.startswith(ALWAYS_THINKING) or effort in ("xhigh", "max")
        ):
            return invalid_request("thinking cannot be disabled for this model")

        input_tokens, cache_write, cache_read = self._input_usage(model, body)
        thinks = thinking == "adaptive" or (five and thinking != "disabled")
        thought = THINKING_TOKENS.get(effort, 8000) if thinks else 0
        fmt = (body.get("output_config") or {}).get("format") or {}
        text = (
            json.dumps(self.prospect, ensure_ascii=False)
            if fmt.get("type") == "json_schema"
            else "Claro: el visitante se llama Juan Pérez y parece interesado."
        )
        room = body.get("max_tokens", 0) - thought
        stop = "end_turn"
        if room < ANSWER_TOKENS:
            text, stop = text[: max(0, room) * 3], "max_tokens"
        return answer_response(
            text=text,
            stop_reason=stop,
            model=model,
            input_tokens=input_tokens,
            output_tokens=min(body.get("max_tokens", 0), thought + ANSWER_TOKENS),
            cache_write=cache_write,
            cache_read=cache_read,
            thinking="..." if thinks else None,
        )

    def _input_usage(self, model: str, body: dict) -> tuple[int, int, int]:
        """(uncached input, cache write, cache read) tokens of this request."""
        system = body.get("system") or []
        if isinstance(system, str):
            system = [{"type": "text", "text": system}]
        fmt = json.dumps((body.get("output_config") or {}).get("format") or {})
        prefix = fmt + "".join(block.get("text", "") for block in system)
        marked = any(block.get("cache_control") for block in system)
        prefix_tokens = _tokens(prefix)
        rest = _tokens(json.dumps(body.get("messages", []), ensure_ascii=False))
        minimum = MIN_CACHEABLE.get(model, DEFAULT_MIN_CACHEABLE)
        if not marked or prefix_tokens < minimum:
            return prefix_tokens + rest, 0, 0
        key = model + "\0" + prefix
        with self.lock:
            hit = key in self._cached
            self._cached.add(key)
        return (rest, 0, prefix_tokens) if hit else (rest, prefix_tokens, 0)
