"""``nexus extract [--extractor rules|claude] FILE|-``: try an extractor on one conversation.

Reads ``{"messages": [{"role": "user"|"assistant", "content": "..."}, ...]}`` and prints
``{"extractor", "prospect", "usage"}`` as JSON on stdout.  Exit status: 0 done, 1 extraction
failed, 2 bad input or configuration (one line on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .. import config
from ..errors import ConfigError, ExtractionError

MAX_MESSAGES = 200  #: as the HTTP API accepts


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise _Usage(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nexus extract", description="Extract a prospect from a conversation.")
    parser.add_argument("--extractor", choices=("rules", "claude"), help="default: NEXUS_EXTRACTOR")
    parser.add_argument("file", help='JSON file with {"messages": [...]}, or - for stdin')
    return parser


def _read_messages(path: str) -> list[dict]:
    try:
        if path == "-":
            data = json.load(sys.stdin)
        else:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
    except OSError as exc:
        raise _Usage(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Usage(f"{path} is not valid JSON: {exc}") from None
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_MESSAGES:
        raise _Usage(f'expected {{"messages": [...]}} with 1..{MAX_MESSAGES} messages')
    for i, m in enumerate(messages):
        ok = isinstance(m, dict) and m.get("role") in ("user", "assistant")
        if not ok or not isinstance(m.get("content"), str):
            raise _Usage(f'messages[{i}] must be {{"role": "user"|"assistant", "content": "..."}}')
    return messages


def cli_main(argv: list[str]) -> int:
    """Run ``nexus extract`` with ``argv`` (the arguments after ``extract``); return the status."""
    from . import get_extractor

    try:
        args = _parser().parse_args(argv)
        settings = config.load()
        if args.extractor:
            if args.extractor == "claude" and not settings.anthropic_api_key:
                raise ConfigError("ANTHROPIC_API_KEY must be set for --extractor claude")
            settings = dataclasses.replace(settings, extractor=args.extractor)
        messages = _read_messages(args.file)
    except (_Usage, ConfigError) as exc:
        print(f"nexus extract: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    extractor = get_extractor(settings)
    try:
        result = extractor.extract(messages)
    except ExtractionError as exc:
        print(f"nexus extract: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    out = {
        "extractor": result.extractor or extractor.name,
        "reason": result.reason,
        "prospect": result.prospect.to_dict(),
        "usage": result.usage,
    }
    print(json.dumps(out, ensure_ascii=False, indent=2))
    return 0
