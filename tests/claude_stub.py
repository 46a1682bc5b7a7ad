"""Bodies a stub of the Anthropic Messages API answers with (shared by the Claude tests)."""

import json

from werkzeug import Response

from nexus.config import DEFAULT_MODEL
from nexus.extraction.prompt import TOOL_NAME

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


def answer(tool_input=None, *, text=None, input_tokens=1500, output_tokens=90, cache_read=0):
    """A Messages API response body: a forced tool call, or plain text when ``text`` is given."""
    if text is not None:
        content, stop = [{"type": "text", "text": text}], "end_turn"
    else:
        content = [{"type": "tool_use", "id": "toolu_01", "name": TOOL_NAME, "input": tool_input}]
        stop = "tool_use"
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": DEFAULT_MODEL,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cache_read,
        },
    }


def answer_response(tool_input=None, **kwargs) -> Response:
    return Response(json.dumps(answer(tool_input, **kwargs)), content_type="application/json")


def error(status, kind="api_error", headers=None) -> Response:
    body = {"type": "error", "error": {"type": kind, "message": f"stub {kind}"}}
    return Response(
        json.dumps(body), status=status, headers=headers or {}, content_type="application/json"
    )
