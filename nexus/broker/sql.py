"""The broker's SQL, loaded by name from ``sql/broker.sql``."""

from __future__ import annotations

from functools import cache

import sqlalchemy as sa

from ..db import SQL_DIR, parse_queries

#: LISTEN/NOTIFY channel; the payload of each notification is a queue name.
CHANNEL = "broker_wakeup"


@cache
def _queries() -> dict[str, sa.TextClause]:
    text = (SQL_DIR / "broker.sql").read_text()
    return {name: sa.text(sql) for name, sql in parse_queries(text).items()}


def q(name: str) -> sa.TextClause:
    """The named query from ``sql/broker.sql``."""
    return _queries()[name]
