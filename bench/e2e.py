"""``make bench-e2e``: POST-to-completed latency and accepted POSTs per second, end to end.

Starts web (gunicorn), worker (dramatiq) and clock as real processes on a throwaway database,
with the rules extractor, then:

1. latency -- 1,000 POSTs one after another on an idle system, each timed from just before the
   POST until its row reads ``completed`` (polled every millisecond);
2. throughput -- 1,000 POSTs from 8 client threads as fast as gunicorn accepts them, then the
   time until all are completed.

Prints a table and writes ``bench/results/e2e.json``.  Not a test: nothing here is asserted.
The peer is the figure the user's own guide promised ("<2 s", down from 30-60 s with Kafka).
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nexus import config, db  # noqa: E402
from nexus.embedded import database  # noqa: E402
from nexus.smoke import SAMPLE, Stack, throwaway_database, wait_completed  # noqa: E402

POSTS = 1000
CLIENT_THREADS = 8
SEED_PROMISE_MS = 2000.0
TARGET_P50_MS, TARGET_P99_MS = 50.0, 250.0
RESULTS = ROOT / "bench" / "results" / "e2e.json"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def conversation(i: int, run: str) -> dict:
    return {"messages": SAMPLE, "sessionId": f"{run}-{i}", "fingerprint": f"fp-{run}-{i}"}


def measure_latency(stack: Stack, conn, run: str) -> list[float]:
    latencies = []
    for i in range(POSTS):
        started = time.perf_counter()
        accepted = stack.post(conversation(i, run))
        status = wait_completed(conn, accepted["queueId"], timeout=30, poll=0.001)
        if status != "completed":
            raise RuntimeError(f"post {i} ended {status}")
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def measure_throughput(stack: Stack, conn, run: str) -> tuple[float, float]:
    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        results = list(pool.map(lambda i: stack.post(conversation(i, run)), range(POSTS)))
    accepted_s = time.perf_counter() - started
    if len(results) != POSTS:
        raise RuntimeError("not every POST was accepted")
    with conn.cursor() as cur:
        while True:
            cur.execute(
                "SELECT count(*) FROM nexus_queue"
                " WHERE session_id LIKE %s AND status = 'completed'",
                (f"{run}-%",),
            )
            if cur.fetchone()[0] == POSTS:
                break
            if time.perf_counter() - started > 300:
                raise RuntimeError("backlog did not drain within 300 s")
            time.sleep(0.01)
    drained_s = time.perf_counter() - started
    return POSTS / accepted_s, POSTS / drained_s


def main() -> int:
    settings = config.load()
    with (
        database(settings, "bench") as server_url,
        throwaway_database(server_url, "nexus_bench_e2e") as url,
    ):
        stack = Stack(url, env={"NEXUS_EXTRACTOR": "rules"})
        stack.start(ROOT / ".pgdata" / "bench-e2e-logs")
        try:
            conn = psycopg2.connect(db.libpq_url(url))
            conn.autocommit = True
            run = uuid.uuid4().hex[:6]
            measure_latency(stack, conn, f"warm{run}")  # first connections, imports, caches
            latencies = measure_latency(stack, conn, f"lat{run}")
            posts_per_s, completed_per_s = measure_throughput(stack, conn, f"tp{run}")
            conn.close()
        finally:
            stack.stop()

    p50, p99 = pct(latencies, 50), pct(latencies, 99)
    result = {
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "posts": POSTS,
        "post_to_completed_ms": {
            "p50": round(p50, 2),
            "p99": round(p99, 2),
            "mean": round(statistics.fmean(latencies), 2),
            "max": round(max(latencies), 2),
        },
        "posts_per_s": round(posts_per_s, 1),
        "completed_per_s_under_load": round(completed_per_s, 1),
        "peer": {"name": "seed promise (<2 s)", "post_to_completed_ms": SEED_PROMISE_MS},
        "ratio_vs_seed_promise_p50": round(SEED_PROMISE_MS / p50, 1),
        "targets": {"p50_ms": TARGET_P50_MS, "p99_ms": TARGET_P99_MS},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    rows = [
        ("POST-to-completed p50 (ms)", p50, TARGET_P50_MS),
        ("POST-to-completed p99 (ms)", p99, TARGET_P99_MS),
        ("accepted POSTs/s (8 clients)", posts_per_s, None),
        ("completed/s under that load", completed_per_s, None),
        ("seed promise / p50 (x faster)", SEED_PROMISE_MS / p50, None),
    ]
    print(f"{'metric':<34}{'value':>12}  target")
    for name, value, target in rows:
        verdict = (
            ""
            if target is None
            else f"<= {target:.0f}  " + ("met" if value <= target else "MISSED")
        )
        print(f"{name:<34}{value:>12.1f}  {verdict}")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
