"""Validation of the widget's request body: clear errors, and nothing the database would refuse.

Anything that passes here can be stored: strings hold no NUL and no lone surrogates (jsonb
refuses both), numbers are finite, nesting is at most :data:`MAX_DEPTH` deep.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

#: Deepest JSON nesting accepted anywhere in the body.
MAX_DEPTH = 32
MAX_MESSAGES = 200
MAX_ID_CHARS = 128
MAX_METADATA_BYTES = 16 * 1024
ROLES = ("user", "assistant")


class InvalidRequest(Exception):
    """A client error: ``status`` (4xx), a message, and optional details."""

    def __init__(self, status: int, message: str, details: object = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses to inf, which jsonb cannot store
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _depth_and_strings(value: object) -> None:
    """Walk the parsed value iteratively: nesting depth, and strings jsonb can store."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidRequest(400, f"JSON nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                _check_string(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            _check_string(item)


def _check_string(text: str) -> None:
    if "\x00" in text:
        raise InvalidRequest(400, "strings must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(400, "strings must be valid Unicode (no lone surrogates)") from None


def parse_json(raw: bytes) -> object:
    """Parse a request body, or raise :class:`InvalidRequest` (400)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(400, "body is not valid UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidRequest(400, f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise InvalidRequest(400, "malformed JSON", str(exc)) from None
    _depth_and_strings(value)
    return value


@dataclass(frozen=True)
class Conversation:
    messages: list[dict]
    session_id: str
    fingerprint: str | None
    metadata: dict


def _identifier(value: object, field: str, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise InvalidRequest(400, f"{field} is required", {"field": field})
        return None
    if not isinstance(value, str):
        raise InvalidRequest(400, f"{field} must be a string", {"field": field})
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        raise InvalidRequest(
            400, f"{field} must be 1..{MAX_ID_CHARS} printable characters", {"field": field}
        )
    return value


def validate_conversation(body: object) -> Conversation:
    """Check the shape of ``POST /api/nexus/producer``; return what will be stored."""
    if not isinstance(body, dict):
        raise InvalidRequest(400, "body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_MESSAGES:
        raise InvalidRequest(
            400, f"messages must be a list of 1..{MAX_MESSAGES} items", {"field": "messages"}
        )
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(400, "each message must be an object", {"index": i})
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise InvalidRequest(400, "message role must be 'user' or 'assistant'", {"index": i})
        if not isinstance(content, str):
            raise InvalidRequest(400, "message content must be a string", {"index": i})
        clean.append({"role": role, "content": content})

    session_id = _identifier(body.get("sessionId"), "sessionId", required=True)
    fingerprint = _identifier(body.get("fingerprint"), "fingerprint", required=False)

    metadata = body.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InvalidRequest(400, "metadata must be a JSON object", {"field": "metadata"})
    if len(json.dumps(metadata, ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
        raise InvalidRequest(
            400, f"metadata must be at most {MAX_METADATA_BYTES} bytes", {"field": "metadata"}
        )
    assert session_id is not None
    return Conversation(clean, session_id, fingerprint, metadata)
