"""The CLI's plain-text tables and times (no I/O)."""

import datetime as dt

import pytest

from nexus.tables import age, render_table, when


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.04, "0.0s"),
        (59.94, "59.9s"),
        (61, "1m01s"),
        (7260, "2h01m"),
        (90_000, "1d01h"),
    ],  # fmt: skip
)
def test_age(seconds, text):
    assert age(seconds) == text


def test_when_is_utc_to_the_second():
    at = dt.datetime(2026, 3, 1, 10, 0, 5, 999, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert when(at) == "2026-03-01 15:00:05Z" and when(None) == "-"


def test_render_table_pads_and_keeps_one_line_per_row():
    text = render_table(["a", "long header"], [["x", "two\nlines"], [None, 3]])
    assert text.splitlines() == [
        "a  long header",
        "-  -----------",
        "x  two lines",
        "-  3",
    ]
    assert render_table(["a"], [], empty="(nothing)") == "(nothing)"


def test_render_table_cuts_the_last_column_to_the_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    text = render_table(["id", "reason"], [["1", "x" * 100]], wrap_last=True)
    last = text.splitlines()[-1]
    assert len(last) == 40 and last.endswith("…")
