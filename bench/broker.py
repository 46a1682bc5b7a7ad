"""``make bench-broker``: our PostgreSQL broker against dramatiq-postgres, same machine, same run.

For each broker, on a database of its own (on the server at ``DATABASE_URL``, else on an
embedded PostgreSQL started in a temporary folder, default settings), with a no-op actor:

- enqueue_per_s -- 2,000 sends one after another, no worker running;
- drain_per_s -- 5,000 queued messages run by one worker process with 8 threads, from the
  first start until the queue is empty;
- latency_ms -- enqueue-to-start over 200 sends to an idle worker, p50/p99;
- delay_lateness_ms -- start minus due time of 100 messages delayed 0.1-1 s, p50/p99;
- redelivery_s -- from the SIGKILL of a worker running a job until another worker starts it
  (each broker at its default lease settings).

Prints a table and writes ``bench/results/broker.json``.  Not a test: nothing is asserted,
but the targets are printed next to the figures.  dramatiq-postgres runs from its own venv
(``bench/.peer-venv``, made on first use); if it cannot be installed, ours still runs and the
JSON says why the peer is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg2

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import peer_dramatiq_postgres as peer  # noqa: E402

from nexus import db, migrations  # noqa: E402
from nexus.embedded import EmbeddedServer  # noqa: E402

RESULTS = BENCH / "results" / "broker.json"
TARGETS = {
    "drain_ratio": 1.2,  #: ours / dramatiq-postgres, at least
    "latency_p50_ms": 5.0,
    "latency_p99_ms": 20.0,
    "delay_lateness_p99_ms": 50.0,
    "redelivery_s": 10.0,
}


def run_scenarios(python: Path | str, kind: str, url: str, work_dir: Path, timeout: float):
    print(f"{kind}:", file=sys.stderr, flush=True)
    out = subprocess.run(
        [str(python), str(BENCH / "broker_scenarios.py"), "--broker", kind, "--url", url]
        + ["--work-dir", str(work_dir), "--redelivery-timeout", str(timeout)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(server_url: str, work_dir: Path, args) -> dict:
    results: dict = {}
    name = f"bench_nexus_{uuid.uuid4().hex[:8]}"
    db.execute_autocommit(server_url, f'CREATE DATABASE "{name}"')
    try:
        url = db.with_database(server_url, name)
        migrations.upgrade(url)
        results["nexus"] = run_scenarios(sys.executable, "nexus", url, work_dir, 60)
    finally:
        db.execute_autocommit(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    if args.skip_peer:
        results["dramatiq-postgres"] = None
        results["peer_note"] = "skipped (--skip-peer)"
        return results
    try:
        python = peer.python()
        results["peer_version"] = peer.version(python)
    except (subprocess.CalledProcessError, OSError) as exc:
        results["dramatiq-postgres"] = None
        results["peer_note"] = f"dramatiq-postgres could not be installed: {exc}"
        print(results["peer_note"], file=sys.stderr)
        return results
    name = f"bench_peer_{uuid.uuid4().hex[:8]}"
    db.execute_autocommit(server_url, f'CREATE DATABASE "{name}"')
    try:
        url = db.with_database(server_url, name)
        subprocess.run(
            [str(python), str(BENCH / "peer_dramatiq_postgres.py"), "init", url], check=True
        )
        results["dramatiq-postgres"] = run_scenarios(
            python, "dramatiq-postgres", url, work_dir, args.peer_redelivery_timeout
        )
    finally:
        db.execute_autocommit(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return results


def ratios(ours: dict, theirs: dict | None) -> dict:
    if not theirs:
        return {}

    def ratio(a, b):
        return None if not a or not b else round(a / b, 2)

    return {
        "enqueue": ratio(ours["enqueue_per_s"], theirs["enqueue_per_s"]),
        "drain": ratio(ours["drain_per_s"], theirs["drain_per_s"]),
        "latency_p50": ratio(theirs["latency_ms"]["p50"], ours["latency_ms"]["p50"]),
        "delay_lateness_p99": ratio(
            theirs["delay_lateness_ms"]["p99"], ours["delay_lateness_ms"]["p99"]
        ),
        "redelivery": ratio(theirs["redelivery_s"], ours["redelivery_s"]),
    }


def targets_met(ours: dict, r: dict) -> dict:
    met = {
        "latency_p50_ms": ours["latency_ms"]["p50"] <= TARGETS["latency_p50_ms"],
        "latency_p99_ms": ours["latency_ms"]["p99"] <= TARGETS["latency_p99_ms"],
        "delay_lateness_p99_ms": ours["delay_lateness_ms"]["p99"]
        <= TARGETS["delay_lateness_p99_ms"],
        "redelivery_s": ours["redelivery_s"] is not None
        and ours["redelivery_s"] <= TARGETS["redelivery_s"],
    }
    if r.get("drain") is not None:
        met["drain_ratio"] = r["drain"] >= TARGETS["drain_ratio"]
    return met


def table(results: dict) -> str:
    ours, theirs = results["nexus"], results.get("dramatiq-postgres")

    def fmt(value, unit=""):
        return "timeout" if value is None else f"{value:,.1f}{unit}"

    rows = [
        ("enqueue (msg/s)", "enqueue_per_s", None, ""),
        ("drain, 8 threads (msg/s)", "drain_per_s", None, ""),
        ("idle latency p50 (ms)", "latency_ms", "p50", "<= 5"),
        ("idle latency p99 (ms)", "latency_ms", "p99", "<= 20"),
        ("delay lateness p50 (ms)", "delay_lateness_ms", "p50", ""),
        ("delay lateness p99 (ms)", "delay_lateness_ms", "p99", "<= 50"),
        ("redelivery after SIGKILL (s)", "redelivery_s", None, "<= 10"),
    ]
    lines = [f"{'':32} {'nexus':>12} {'dramatiq-postgres':>18}   target"]
    for label, key, sub, target in rows:
        a = ours[key] if sub is None else ours[key][sub]
        b = None if not theirs else theirs[key] if sub is None else theirs[key][sub]
        b_text = "-" if not theirs else fmt(b)
        if key == "drain_per_s":
            target = ">= 1.2x peer"
        lines.append(f"{label:32} {fmt(a):>12} {b_text:>18}   {target}")
    if results.get("ratios"):
        r = results["ratios"]
        lines.append(
            "ratios (ours better when > 1): "
            + ", ".join(f"{k} {v}x" for k, v in r.items() if v is not None)
        )
    if results.get("peer_note"):
        lines.append(f"note: {results['peer_note']}")
    met = results["targets_met"]
    lines.append("targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in met.items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-peer", action="store_true", help="measure ours only")
    parser.add_argument(
        "--peer-redelivery-timeout",
        type=float,
        default=150.0,
        help="seconds to wait for the peer's redelivery (its defaults take 60-105 s)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nexus-bench-broker-") as tmp:
        work_dir = Path(tmp)
        server_url = os.environ.get("DATABASE_URL", "").strip()
        server = None
        if not server_url:
            server = EmbeddedServer(work_dir / "pg")
            server_url = server.start()
        try:
            results = measure(server_url, work_dir, args)
            with psycopg2.connect(db.libpq_url(server_url)) as conn, conn.cursor() as cur:
                cur.execute("SHOW server_version")
                pg_version = cur.fetchone()[0]
        finally:
            if server is not None:
                server.close()

    results["ratios"] = ratios(results["nexus"], results.get("dramatiq-postgres"))
    results["targets"] = TARGETS
    results["targets_met"] = targets_met(results["nexus"], results["ratios"])
    results["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "postgresql": pg_version,
        "server": "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded, defaults",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
