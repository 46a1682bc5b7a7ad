"""``make bench-admin``: /metrics, /admin and /api/nexus/stats with 1,000,000 queue rows.

On a throwaway database: fills ``nexus_queue`` with ``--rows`` rows (default 1,000,000) in one
``INSERT ... SELECT generate_series`` with the dispatch triggers disabled for the fill (the
tally triggers stay on, so the counts are maintained as in production), spread over 30 days:
about 97.5 % completed, 2 % failed, 0.5 % pending (a backlog) and 0.01 %
processing (in flight: bounded by the workers' threads); plus prospects and dead letters so
every table of the dashboard is full.  Then serves the app (werkzeug, in this process) and
times each endpoint over HTTP -- median and max of ``--requests`` requests after two warm-ups
-- and prints the plan of every query those endpoints run (auto_explain, nested statements
included, so the plans inside the SQL functions show).

Target (SPEC 11): each endpoint <= 100 ms.  Prints numbers; asserts nothing.  Writes
``bench/results/admin_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nexus import config, db  # noqa: E402
from nexus.embedded import database  # noqa: E402
from nexus.smoke import throwaway_database  # noqa: E402

TOKEN = "bench-admin-token-0123456789"
ENDPOINTS = ("/metrics", "/admin", "/api/nexus/stats")
TARGET_MS = 100.0
RESULTS = ROOT / "bench" / "results" / "admin_scale.json"
#: The named queries (sql/queries.sql) those endpoints run, with example parameters.
QUERIES = {
    "/metrics": [
        ("admin_status_counts", {}),
        ("ops_oldest_ages", {}),
        ("ops_queue_stats", {}),
        ("ops_live_workers", {}),
    ],
    "/admin": [
        ("admin_minutes", {"minutes": 60}),
        ("admin_processing_times", {"window_s": 3600}),
        ("ops_failed_rows", {"since": None, "limit": 50}),
        ("ops_dead_letters", {"limit": 50}),
        ("ops_prospects", {"momento": "caliente", "since": None, "limit": 50}),
    ],
    "/api/nexus/stats": [("stats_by_status", {}), ("oldest_pending_age", {})],
}

FILL = """
ALTER TABLE nexus_queue DISABLE TRIGGER nexus_queue_dispatch_new;
INSERT INTO nexus_queue (messages, session_id, fingerprint, status, created_at, enqueued_at,
                         updated_at, processed_at, error_message, retry_count, extractor, result)
SELECT '[{"role": "user", "content": "Hola, me llamo Juan"}]'::jsonb,
       'bench-' || i, 'fp-' || (i %% 50000), s.status, t.at, t.at, t.at,
       CASE WHEN s.status IN ('completed', 'failed') THEN t.at + interval '40 ms' END,
       CASE WHEN s.status = 'failed' THEN 'TransientExtractionError: 529 overloaded' END,
       CASE WHEN s.status = 'failed' THEN 5 ELSE 0 END,
       'rules', '{"nombre": "Juan"}'::jsonb
  FROM generate_series(1, %(rows)s) AS i,
       LATERAL (SELECT now() - (i * interval '30 days' / %(rows)s) AS at) AS t,
       LATERAL (SELECT CASE WHEN i %% 200 = 0 THEN 'pending'
                            WHEN i %% 10000 = 1 THEN 'processing'
                            WHEN i %% 50 = 2 THEN 'failed'
                            ELSE 'completed' END AS status) AS s;
ALTER TABLE nexus_queue ENABLE TRIGGER nexus_queue_dispatch_new;
INSERT INTO prospect_data (fingerprint_id, nombre, nivel_interes, momento_optimo, updated_at)
SELECT 'fp-' || i, 'Juan ' || i, (i %% 21) / 2.0,
       CASE WHEN i %% 21 >= 14 THEN 'caliente' WHEN i %% 21 >= 8 THEN 'tibio' ELSE 'frio' END,
       now() - (i * interval '30 days' / 50000)
  FROM generate_series(1, 50000) AS i;
INSERT INTO broker_dead_letters (message_id, queue_name, actor_name, args, kwargs, options,
                                 message_timestamp, enqueued_at, attempts, retries, error)
SELECT gen_random_uuid(), 'nexus', 'process_nexus_message',
       jsonb_build_array(gen_random_uuid()::text, 1), '{}', '{}', 0, now(), 6, 5, 'gave up'
  FROM generate_series(1, 1000);
"""


def fill(url: str, rows: int) -> float:
    conn = psycopg2.connect(db.libpq_url(url))
    started = time.perf_counter()
    with conn, conn.cursor() as cur:
        cur.execute(FILL, {"rows": rows})
    filled = time.perf_counter() - started
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SHOW server_version")
        print(f"PostgreSQL {cur.fetchone()[0]}", flush=True)
        # As autovacuum would: statistics, and a visibility map for index-only scans.
        cur.execute("VACUUM ANALYZE nexus_queue, prospect_data, broker_dead_letters")
    conn.close()
    return filled


TALLY_TRIGGERS = (
    "nexus_queue_tally_insert",
    "nexus_queue_tally_update",
    "nexus_queue_tally_delete",
)


def hot_path(url: str, rows: int) -> dict[str, float]:
    """What the tally triggers cost the hot path: microseconds per row life -- enqueue, claim,
    complete, three transactions as in production -- with the tally triggers on and off,
    alternating rounds on the same database."""
    conn = psycopg2.connect(db.libpq_url(url))
    conn.autocommit = True
    per_life: dict[str, list[float]] = {"on": [], "off": []}
    with conn.cursor() as cur:
        for round_no, mode in enumerate(("on", "off") * 3):
            action = "ENABLE" if mode == "on" else "DISABLE"
            for trigger in TALLY_TRIGGERS:
                cur.execute(f"ALTER TABLE nexus_queue {action} TRIGGER {trigger}")
            started = time.perf_counter()
            for i in range(rows):
                cur.execute(
                    "SELECT queue_id FROM nexus_enqueue(%s::jsonb, %s)",
                    ('[{"role": "user", "content": "hola"}]', f"hot-{round_no}-{i}"),
                )
                queue_id = cur.fetchone()[0]
                for status in ("processing", "completed"):
                    cur.execute(
                        "UPDATE nexus_queue SET status = %s WHERE id = %s", (status, queue_id)
                    )
            per_life[mode].append((time.perf_counter() - started) / rows * 1e6)
        for trigger in TALLY_TRIGGERS:
            cur.execute(f"ALTER TABLE nexus_queue ENABLE TRIGGER {trigger}")
    conn.close()
    return {mode: statistics.median(t) for mode, t in per_life.items()}


def serve(url: str):
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    from nexus.web import create_app

    settings = config.load({"NEXUS_ADMIN_TOKEN": TOKEN})
    app = create_app({"SETTINGS": settings, "DATABASE_URL": url})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, app


def time_endpoint(base: str, path: str, requests: int) -> list[float]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    timings = []
    for i in range(requests + 2):
        started = time.perf_counter()
        with urllib.request.urlopen(urllib.request.Request(base + path, headers=headers)) as r:
            r.read()
            if r.status != 200:
                raise RuntimeError(f"{path} answered {r.status}")
        if i >= 2:  # two warm-ups: first connections, template compilation
            timings.append((time.perf_counter() - started) * 1000)
    return timings


def _pyformat(query: str) -> str:
    """A named query's ``:param`` binds in psycopg2's ``%(param)s`` style."""
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", query.replace("%", "%%"))


def explain(url: str) -> dict[str, list[str]]:
    """The plans (with actual times) of every query the endpoints run.  With auto_explain
    (stock PostgreSQL's contrib) the statements inside the SQL functions are shown too; the
    embedded server (pgserver) ships no contrib, so there only the top-level plan is shown."""
    conn = psycopg2.connect(db.libpq_url(url))
    conn.autocommit = True
    plans: dict[str, list[str]] = {}
    with conn.cursor() as cur:
        try:
            cur.execute("LOAD 'auto_explain'")
            nested = True
        except psycopg2.Error:
            nested = False
            print("note: no auto_explain on this server: top-level plans only (use DATABASE_URL")
            print("      of a stock PostgreSQL to see the plans inside the functions)")
        if nested:
            for setting in (
                "auto_explain.log_min_duration = 0",
                "auto_explain.log_analyze = on",
                "auto_explain.log_buffers = on",
                "auto_explain.log_nested_statements = on",
                "client_min_messages = log",
            ):
                cur.execute(f"SET {setting}")
        for endpoint, queries in QUERIES.items():
            for name, params in queries:
                query = _pyformat(db.q(name).text)
                del conn.notices[:]
                if nested:
                    cur.execute(query, params)
                    cur.fetchall()
                    lines = [n.strip() for n in conn.notices]
                else:
                    cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + query, params)
                    lines = [r[0] for r in cur.fetchall()]
                plans[f"{endpoint} {name}"] = lines
    conn.close()
    return plans


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=15)
    parser.add_argument("--hot-path-rows", type=int, default=2000)
    args = parser.parse_args()

    settings = config.load()
    with (
        database(settings, "bench") as server_url,
        throwaway_database(server_url, "nexus_bench_admin") as url,
    ):
        print(f"filling nexus_queue with {args.rows:,} rows ...", flush=True)
        fill_s = fill(url, args.rows)
        print(f"filled in {fill_s:.1f} s", flush=True)
        server, app = serve(url)
        base = f"http://127.0.0.1:{server.server_port}"
        try:
            timings = {p: time_endpoint(base, p, args.requests) for p in ENDPOINTS}
        finally:
            server.shutdown()
            app.extensions["nexus_engine"].dispose()
        plans = explain(url)
        hot = hot_path(url, args.hot_path_rows)

    for name, lines in plans.items():
        print(f"\n-- {name}")
        for line in lines:
            print("   " + line.replace("\n", "\n   "))

    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rows": args.rows,
        "fill_s": round(fill_s, 1),
        "requests": args.requests,
        "endpoints_ms": {
            p: {"median": round(statistics.median(t), 2), "max": round(max(t), 2)}
            for p, t in timings.items()
        },
        "target_ms": TARGET_MS,
        "row_life_us": {"tally_on": round(hot["on"], 1), "tally_off": round(hot["off"], 1)},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'endpoint':<20}{'median ms':>10}{'max ms':>10}  target (rows: {args.rows:,})")
    for path, t in timings.items():
        median = statistics.median(t)
        verdict = "met" if median <= TARGET_MS else "MISSED"
        print(f"{path:<20}{median:>10.1f}{max(t):>10.1f}  <= {TARGET_MS:.0f}  {verdict}")
    print(
        f"\nrow life (enqueue + claim + complete, 3 transactions): {hot['on']:.0f} us with the"
        f" tally triggers, {hot['off']:.0f} us without ({hot['on'] / hot['off']:.2f}x)"
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
