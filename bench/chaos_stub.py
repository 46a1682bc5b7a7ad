"""The misbehaving Anthropic API of ``make chaos``: a real HTTP server in a thread.

It answers ``POST /v1/messages`` with a valid extraction most of the time and, at random, with
a 429 carrying ``Retry-After``, a 529, a 500 (some whose error message holds a NUL and a lone
surrogate, text the database refuses), garbage (a 200 whose body is not JSON, or JSON of
the wrong shape), or a hang past the client's timeout.  Both request shapes are understood: a
request with ``tools`` (forced tool use) gets a ``tool_use`` block with the tool's input; any
other (structured outputs, ``output_config``) gets a text block holding the JSON.

A conversation containing :data:`PROBE_MARK` is always answered well: the recovery probes of
the harness measure the system, not the stub's dice.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter

from werkzeug import Request, Response
from werkzeug.serving import WSGIRequestHandler, make_server

#: Text that makes the stub answer well whatever the dice say (recovery probes).
PROBE_MARK = "chaos-probe"
#: Seconds a hanging answer waits before giving up: past the SDK's 30 s client timeout.
HANG_S = 35.0
#: Seconds sent in ``Retry-After`` with a 429 (small: the run is short).
RETRY_AFTER_S = 1
#: Probability of each outcome; the rest is a good answer.
FAULTS = {
    "rate_limited_429": 0.05,
    "overloaded_529": 0.04,
    "server_error_500": 0.04,
    "odd_error_text_500": 0.02,
    "garbage_not_json": 0.02,
    "garbage_wrong_shape": 0.02,
    "hang": 0.005,
}

NAMES = ("Juan Pérez", "Ana Gómez", "Luis Martín", None, None)
ARQUETIPOS = (
    "emprendedor_dueno_negocio",
    "profesional_vision",
    "lider_hogar",
    "joven_ambicion",
    "independiente_freelancer",
    "lider_comunidad",
    None,
)
OBJECIONES = ("precio", "tiempo", "confianza", "mlm")


def prospect(rng: random.Random) -> dict:
    """A random extraction that fits the schema the extractor asks for."""
    return {
        "nombre": rng.choice(NAMES),
        "email": rng.choice((None, "visitante@example.com")),
        "telefono": rng.choice((None, "+34 612 345 678")),
        "ocupacion": rng.choice((None, "ingeniera", "estudiante")),
        "nivel_interes": rng.randrange(0, 21) / 2,
        "objeciones": sorted(rng.sample(OBJECIONES, rng.randrange(0, 3))),
        "rechazo": rng.random() < 0.1,
        "arquetipo": rng.choice(ARQUETIPOS),
    }


def message(request: dict, data: dict) -> dict:
    """A Messages API response carrying ``data`` in the shape ``request`` asked for."""
    tools = request.get("tools") or []
    if tools:
        content = [{"type": "tool_use", "id": "toolu_chaos", "name": tools[0]["name"],
                    "input": data}]  # fmt: skip
        stop = "tool_use"
    else:
        content = [{"type": "text", "text": json.dumps(data, ensure_ascii=False)}]
        stop = "end_turn"
    return {
        "id": "msg_chaos",
        "type": "message",
        "role": "assistant",
        "model": request.get("model", "claude-haiku-5-5"),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 1500,
            "output_tokens": 90,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def _error(status: int, kind: str, headers: dict | None = None, text: str = "") -> Response:
    message = f"chaos stub: {kind}{text}"
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return Response(json.dumps(body), status, headers or {}, content_type="application/json")


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # thousands of requests: no access log
        pass


class ClaudeStub:
    """``with ClaudeStub(seed) as stub:`` serves on ``stub.url`` until the block ends."""

    def __init__(self, seed: int | None = None, faults: dict[str, float] | None = None):
        self.rng = random.Random(seed)
        self.faults = FAULTS if faults is None else faults
        self.outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = make_server(
            "127.0.0.1", 0, self._app, threaded=True, request_handler=_QuietHandler
        )
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ClaudeStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stopping.set()  # releases hanging answers at once
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def _pick(self, body: bytes) -> str:
        if PROBE_MARK.encode() in body:
            return "probe"
        with self._lock:
            roll = self.rng.random()
        for kind, p in self.faults.items():
            if roll < p:
                return kind
            roll -= p
        return "ok"

    def _app(self, environ, start_response):
        request = Request(environ)
        response = self.respond(request)
        return response(environ, start_response)

    def respond(self, request: Request) -> Response:
        if request.method != "POST" or not request.path.endswith("/v1/messages"):
            return _error(404, "not_found_error")
        raw = request.get_data()
        try:
            payload = json.loads(raw)
        except ValueError:
            return _error(400, "invalid_request_error")
        kind = self._pick(raw)
        with self._lock:
            self.outcomes[kind] += 1
            data = prospect(self.rng)
        if kind == "rate_limited_429":
            return _error(429, "rate_limit_error", {"Retry-After": str(RETRY_AFTER_S)})
        if kind == "overloaded_529":
            return _error(529, "overloaded_error")
        if kind == "server_error_500":
            return _error(500, "api_error")
        if kind == "odd_error_text_500":  # escaped in the JSON: \u0000 and \ud800
            return _error(500, "api_error", text=" nul \x00 lone \ud800 surrogate")
        if kind == "garbage_not_json":
            return Response('{"id": "msg_chaos", "content": [ <<garbage', 200,
                            content_type="application/json")  # fmt: skip
        if kind == "garbage_wrong_shape":
            data = {"nombre": 42, "nivel_interes": "muchísimo", "objeciones": "todas"}
        if kind == "hang":
            self._stopping.wait(HANG_S)
            return _error(504, "timeout_error")
        return Response(json.dumps(message(payload, data)), content_type="application/json")
