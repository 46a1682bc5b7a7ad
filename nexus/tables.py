"""Plain-text tables and human-readable times for the ``nexus`` CLI."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Sequence

#: Width a table aims for when the terminal's is unknown (pipes, tests).
DEFAULT_WIDTH = 120
#: The narrowest a wrapped last column gets.
MIN_LAST = 20


def age(seconds: float | None) -> str:
    """``4.2s``, ``3m12s``, ``2h05m``, ``3d04h``; ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86_400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86_400}d{s % 86_400 // 3600:02d}h"


def when(value: dt.datetime | None) -> str:
    """A timestamp in UTC to the second, ``-`` for None."""
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _cell(value) -> str:
    text = "-" if value is None else str(value)
    return " ".join(text.split())  # one line per row: newlines and tabs become spaces


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence],
    *,
    empty: str = "(none)",
    wrap_last: bool = False,
) -> str:
    """Columns padded to their widest cell.  ``wrap_last`` cuts the last column (a reason or
    an error) to what the terminal leaves, ending it with an ellipsis."""
    if not rows:
        return empty
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    if wrap_last:
        width = shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns
        room = max(MIN_LAST, width - sum(w + 2 for w in widths[:-1]))
        if widths[-1] > room:
            widths[-1] = room
            for r in cells:
                if len(r[-1]) > room:
                    r[-1] = r[-1][: room - 1] + "…"
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)
