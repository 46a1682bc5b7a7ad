"""What the client-side deadline costs: client CPU per statement with and without the wait
callback of :mod:`nexus.connection`.

On the server at ``DATABASE_URL``, else on an embedded PostgreSQL started in a temporary
folder.  Runs ``SELECT 1`` round trips on one autocommit connection, alternating blocking
libpq (no callback) and the wait callback, ``--rounds`` times each, and prints the median and
range of client CPU µs and wall µs per statement.  Not a test: nothing is asserted.

    .venv/bin/python bench/connection_cost.py [--statements 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg2.extensions

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nexus import connection, db  # noqa: E402
from nexus.embedded import EmbeddedServer  # noqa: E402


def measure(url: str, statements: int) -> tuple[float, float]:
    """(client CPU µs, wall µs) per statement on a fresh connection."""
    conn = connection.connect(db.libpq_url(url), "nexus-bench-connection")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for _ in range(200):  # warm up
                cur.execute("SELECT 1")
                cur.fetchone()
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(statements):
                cur.execute("SELECT 1")
                cur.fetchone()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        conn.close()
    return cpu * 1e6 / statements, wall * 1e6 / statements


def run(url: str, statements: int, rounds: int) -> None:
    figures: dict[str, list[tuple[float, float]]] = {"blocking libpq": [], "wait callback": []}
    for _ in range(rounds):
        psycopg2.extensions.set_wait_callback(None)
        figures["blocking libpq"].append(measure(url, statements))
        connection.install()
        figures["wait callback"].append(measure(url, statements))
    print(f"{statements} x SELECT 1, {rounds} rounds (median [min-max])")
    print(f"{'':16} {'client CPU µs':>24} {'wall µs':>24}")
    for label, values in figures.items():
        cells = []
        for i in (0, 1):
            xs = [v[i] for v in values]
            cells.append(f"{statistics.median(xs):7.1f} [{min(xs):.1f}-{max(xs):.1f}]")
        print(f"{label:16} {cells[0]:>24} {cells[1]:>24}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statements", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "").strip()
    if url:
        run(url, args.statements, args.rounds)
        return 0
    with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(Path(tmp) / "pg") as server:
        run(server.url, args.statements, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
