"""The retry policy itself (no database)."""

from __future__ import annotations

import random

import dramatiq
from hypothesis import given
from hypothesis import strategies as st

from nexus.broker import PostgresBroker, Retries, backoff_ms
from nexus.broker.gate import Gate


@given(
    retries=st.integers(0, 100),
    min_backoff=st.integers(0, 100_000),
    extra=st.integers(0, 10**9),
    seed=st.integers(0, 2**32),
)
def test_backoff_stays_within_bounds_and_doubles(retries, min_backoff, extra, seed) -> None:
    max_backoff = min_backoff + extra
    delay = backoff_ms(retries, min_backoff, max_backoff, random.Random(seed))
    assert min_backoff <= delay <= max_backoff
    floor = min_backoff * 2**retries
    assert delay == max_backoff or floor <= delay <= 2 * floor


def test_dramatiq_retries_is_replaced_with_its_settings() -> None:
    # Given Dramatiq's own Retries middleware, in the list or added later
    broker = PostgresBroker(
        "postgresql://unused/x",
        middleware=[dramatiq.middleware.Retries(max_retries=7, min_backoff=10, max_backoff=99)],
    )
    broker.add_middleware(dramatiq.middleware.Retries(max_retries=1))

    # Then ours stands in for it, keeping the settings (no second enqueue of a failed message),
    # and the broker's own Gate stays last
    assert [type(m) for m in broker.middleware] == [Retries, Retries, Gate]
    assert (broker.retries.max_retries, broker.retries.min_backoff) == (7, 10)
    assert broker.middleware[1].max_retries == 1


def test_default_middleware_and_retry_defaults() -> None:
    broker = PostgresBroker("postgresql://unused/x", max_retries=5, min_backoff=2_000)
    kinds = {type(m).__name__ for m in broker.middleware}
    assert {"Retries", "CurrentMessage", "TimeLimit", "AgeLimit"} <= kinds
    assert not any(type(m) is dramatiq.middleware.Retries for m in broker.middleware)
    assert (broker.retries.max_retries, broker.retries.min_backoff) == (5, 2_000)
