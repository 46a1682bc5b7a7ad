"""Prometheus metrics, from ``prometheus_client`` (never hand-written exposition).

Two kinds:

- Counted in the process where they happen (extraction seconds, failures, LLM tokens in the
  workers; HTTP requests in the web).  When ``PROMETHEUS_MULTIPROC_DIR`` names a directory
  shared by the processes of a host (``nexus run`` sets one up for web + worker), the library
  writes their values there and ``/metrics`` aggregates every process's files; without it each
  process counts in memory and ``/metrics`` shows the answering process's own.
- Read from the database at scrape time (a custom collector): rows by status, the oldest
  pending row, broker messages by queue and state, live workers.  Cheap with millions of rows:
  a trigger-maintained tally and partial indexes (``sql/migrations/0010_admin.sql``).

``prometheus_client`` decides at import whether it runs in multiprocess mode, from the
environment: whoever sets ``PROMETHEUS_MULTIPROC_DIR`` must do so before importing this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from . import db
from .errors import DatabaseError, DatabaseUnavailable

log = logging.getLogger(__name__)

#: The multiprocess directory prometheus_client saw at import (None: in-memory metrics).
MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Broker message states, each exported even at zero so alerts see a series.
BROKER_STATES = ("ready", "delayed", "claimed", "dead")
#: Queues exported even when empty (the pipeline's; others appear once they hold messages).
KNOWN_QUEUES = ("nexus",)
#: Seconds; from the rules extractor's fraction of a millisecond to a slow Claude call.
EXTRACTION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: Token kinds, named after the API's usage fields.
TOKEN_KINDS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_creation_input_tokens": "cache_write",
    "cache_read_input_tokens": "cache_read",
}

# The ``*_created`` timestamps double every counter's series and say nothing an alert needs.
disable_created_metrics()

#: This process's own metrics.  Not the library's global registry: an app built twice (tests)
#: must not register twice, and the web exports only what it chooses.
REGISTRY = CollectorRegistry()

EXTRACTION_SECONDS = Histogram(
    "nexus_extraction_seconds",
    "Seconds spent extracting one conversation version, by extractor.",
    ["extractor"],
    buckets=EXTRACTION_BUCKETS,
    registry=REGISTRY,
)
EXTRACTION_FAILURES = Counter(
    "nexus_extraction_failures",
    "Failed extraction attempts, by reason (the exception's class).",
    ["reason"],
    registry=REGISTRY,
)
LLM_TOKENS = Counter(
    "nexus_llm_tokens",
    "LLM tokens used, failed calls included, by model and kind.",
    ["model", "kind"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "nexus_http_requests",
    "HTTP requests answered, by endpoint (URL rule) and status code.",
    ["endpoint", "status"],
    registry=REGISTRY,
)


# -- recording (workers and web) ---------------------------------------------------------------


def count_calls(calls) -> None:
    """Add the token usage of each LLM call (``ExtractionResult.calls`` /
    ``ExtractionError.calls``: ``{"model", "input_tokens", ...}`` per call)."""
    for usage in calls or ():
        model = str(usage.get("model") or "unknown")
        for field, kind in TOKEN_KINDS.items():
            n = usage.get(field) or 0
            if isinstance(n, int | float) and n > 0:
                LLM_TOKENS.labels(model, kind).inc(n)


def extraction_done(extractor: str, seconds: float, calls=()) -> None:
    EXTRACTION_SECONDS.labels(extractor).observe(seconds)
    count_calls(calls)


def extraction_failed(exc: BaseException) -> None:
    """One failed attempt.  The reason is the exception's class: a bounded label, unlike its
    message (which may quote a conversation).  Its calls' tokens are counted by the caller."""
    EXTRACTION_FAILURES.labels(type(exc).__name__).inc()


def count_request(endpoint: str, status: int) -> None:
    HTTP_REQUESTS.labels(endpoint, str(status)).inc()


# -- exposition (web) --------------------------------------------------------------------------


class DatabaseCollector:
    """Gauges read from the database at scrape time, through the admin functions (the web's
    role may call functions only).  A database that does not answer gives
    ``nexus_database_up 0`` and no other database gauge, so the process's counters are still
    scraped."""

    def __init__(self, engine):
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("nexus_database_up", "1 when the database answered this scrape.")
        try:
            snap = db.admin_metrics(self.engine)
        except (DatabaseUnavailable, DatabaseError) as exc:
            log.warning("metrics: the database did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        rows = GaugeMetricFamily(
            "nexus_queue_rows", "Rows in nexus_queue by status, all time.", labels=["status"]
        )
        for status, count in snap["status_counts"].items():
            rows.add_metric([status], count)
        yield rows

        oldest = snap["oldest_pending_s"]
        yield GaugeMetricFamily(
            "nexus_queue_oldest_pending_seconds",
            "Age of the oldest pending version (0 when nothing is pending).",
            value=0.0 if oldest is None else oldest,
        )

        broker = GaugeMetricFamily(
            "nexus_broker_messages",
            "Broker messages by queue and state (ready, delayed, claimed, dead).",
            labels=["queue", "state"],
        )
        queues = {q: {} for q in KNOWN_QUEUES} | snap["broker"]
        for queue, states in queues.items():
            for state in BROKER_STATES:
                broker.add_metric([queue, state], states.get(state, 0))
        yield broker

        yield GaugeMetricFamily(
            "nexus_workers_live", "Broker workers with a live lease.", value=snap["workers_live"]
        )


class _Exposition:
    """What one scrape shows: this host's process metrics and the database gauges."""

    def __init__(self, collectors: Iterable):
        self.collectors = list(collectors)

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "nexus_metrics_multiprocess",
            "1 when the process metrics shown are summed over PROMETHEUS_MULTIPROC_DIR (every "
            "process of the host), 0 when they are the answering process's own.",
            value=1 if MULTIPROC_DIR else 0,
        )
        for collector in self.collectors:
            yield from collector.collect()


def _process_metrics():
    if MULTIPROC_DIR:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=MULTIPROC_DIR)
        return registry
    return REGISTRY


def render(engine) -> bytes:
    """The Prometheus text exposition of one scrape."""
    return generate_latest(_Exposition([_process_metrics(), DatabaseCollector(engine)]))
