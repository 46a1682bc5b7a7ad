"""``make chaos``: the whole system under traffic and faults, then a check that nothing was lost.

For ``CHAOS_SECONDS`` (default 120) the harness runs, on a durable PostgreSQL of its own (a temp
folder, fsync on), the Procfile's processes -- web (gunicorn, bound to 127.0.0.1), two separate
``dramatiq`` worker invocations and the clock -- with the Claude extractor pointed at a stub
that misbehaves at random (:mod:`chaos_stub`).  Client threads POST new conversations, longer
resends, strict-prefix and identical resends, and hostile bodies.  A fault thread injects, a
few seconds apart: SIGKILL of a worker, SIGSTOP of a worker past its lease then SIGCONT,
``pg_terminate_backend`` of every client backend, a fast and an immediate PostgreSQL restart,
and an ACCESS EXCLUSIVE lock on ``nexus_queue`` or ``broker_messages`` held for 10 s.  A
supervisor thread restarts any process that exits (a SIGKILLed worker, or one that exited
non-zero by itself), as Heroku or systemd would.

Then faults and traffic stop, the stub answers well, and the system drains.  The verdict, per
accepted session (a 202 ``accepted`` answer; a 503, 4xx or connection error is a rejection,
not a loss):

* lost -- the row is missing, or its stored conversation does not extend the latest accepted
  one (an older version replaced a newer one);
* stuck -- a row (of any session) not ``completed`` or ``failed`` when the drain deadline
  passed;
* failed rows must carry ``error_message``;
* duplicate_merges -- (queue_id, version) pairs merged more than once, counted in the
  ``prospect_merges`` ledger when it exists; otherwise reported as not measurable (null).

max_recovery_s: after each fault ends (process killed, lock released, server back up, process
continued), the seconds until a fresh probe conversation -- POSTed again after every 503 or
connection error -- reads ``completed``.  The stub always answers probes well, so this measures
the system, not the stub's dice.

Writes ``bench/results/chaos.json`` and prints a table.  Exit status 1 if anything was lost or
stuck, a failed row has no reason, or duplicate merges were measured.  Every child process is
stopped on exit, Ctrl-C and SIGTERM included; all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from chaos_faults import Faults  # noqa: E402
from chaos_processes import Supervisor, thread_deaths  # noqa: E402
from chaos_stub import ClaudeStub  # noqa: E402
from chaos_traffic import Client  # noqa: E402
from chaos_verdict import Ledger, broker_backlog, verdict  # noqa: E402

from nexus import config, db, migrations  # noqa: E402
from nexus.embedded import EmbeddedServer  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "chaos.json"
LOG_DIR = ROOT / ".pgdata" / "chaos-logs"
DEFAULT_SECONDS = 120
CLIENTS = 4  #: traffic threads
DRAIN_TIMEOUT_S = 180.0  #: after traffic stops: > the sweeper's 30 s + backoff + a hung call
WORKER_ENV = {
    "NEXUS_EXTRACTOR": "claude",
    "ANTHROPIC_API_KEY": "chaos-key",
    "NEXUS_MIN_BACKOFF_MS": "200",
    "NEXUS_MAX_BACKOFF_MS": "2000",
    "NEXUS_MAX_RETRIES": "10",
    "NEXUS_DEBOUNCE_MS": "500",  # read once the pipeline-v2 branch is merged; ignored before
}


def seconds_setting() -> int:
    raw = os.environ.get("CHAOS_SECONDS", "").strip()
    if not raw:
        return DEFAULT_SECONDS
    if not raw.isdigit() or not 5 <= int(raw) <= 86_400:
        raise SystemExit(f"CHAOS_SECONDS must be a whole number of seconds 5..86400, got {raw!r}")
    return int(raw)


def drain(url: str, timeout: float) -> float:
    """Seconds until no row is pending or processing (or ``timeout``, then it returns)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(psycopg2.Error):
            conn = psycopg2.connect(url, connect_timeout=5)
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT count(*) FROM nexus_queue"
                        " WHERE status NOT IN ('completed', 'failed')"
                    )
                    if cur.fetchone()[0] == 0:
                        return time.monotonic() - started
            finally:
                conn.close()
        time.sleep(0.5)  # polling interval
    return time.monotonic() - started


def print_table(result: dict) -> None:
    rows = [(k, result[k]) for k in ("seconds", "accepted", "completed", "failed", "lost",
                                     "stuck", "duplicate_merges", "max_recovery_s")]  # fmt: skip
    rows += [(f"faults: {k}", v) for k, v in sorted(result["faults"].items())]
    print(f"{'metric':<34}{'value':>10}")
    for name, value in rows:
        shown = "n/a" if value is None else value
        print(f"{name:<34}{shown:>10}")


def run(seconds: int, seed: int) -> dict:
    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(prefix="nexus-chaos-"))
    if LOG_DIR.exists():
        shutil.rmtree(LOG_DIR)
    server = EmbeddedServer(tmp / "pg")  # default settings: fsync on -- durability is tested
    supervisor = None
    threads: list[threading.Thread] = []
    try:
        url = db.libpq_url(server.start())
        migrations.upgrade(url)
        with ClaudeStub(seed) as stub:
            env = {k: v for k, v in os.environ.items()
                   if k not in config.VARIABLES and not k.startswith("ANTHROPIC_")}  # fmt: skip
            env.update(WORKER_ENV, DATABASE_URL=url, ANTHROPIC_BASE_URL=stub.url,
                       PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
                       PYTHONUNBUFFERED="1")  # fmt: skip
            supervisor = Supervisor(env, LOG_DIR)
            supervisor.start()
            supervisor.wait_web()
            ledger = Ledger()
            began = time.monotonic()
            until = began + seconds
            clients = [Client(i, supervisor.port, ledger, until, rng.randrange(1 << 30))
                       for i in range(CLIENTS)]  # fmt: skip
            faults = Faults(server, supervisor, ledger, url, until, rng.randrange(1 << 30))
            threads = [*clients, faults]
            for t in threads:
                t.start()
            for t in clients:
                while t.is_alive():
                    t.join(0.5)
            while not faults.done.wait(0.5):
                pass
            traffic_s = time.monotonic() - began
            stub.faults = {}  # the drain measures the system, not the stub's dice
            print(f"traffic and faults over after {traffic_s:.0f} s; draining ...", flush=True)
            drained_s = drain(url, DRAIN_TIMEOUT_S)
            with contextlib.closing(psycopg2.connect(url, connect_timeout=10)) as conn:
                conn.autocommit = True
                checked = verdict(conn, ledger.expected)
                backlog = broker_backlog(conn)
                with conn.cursor() as cur:
                    cur.execute("SELECT count(*) FROM broker_dead_letters")
                    dead_letters = cur.fetchone()[0]
            stub_outcomes = dict(stub.outcomes)
    finally:
        for t in threads:
            if isinstance(t, Faults):
                t.halt.set()
        if supervisor is not None:
            supervisor.stop_all()
        server.close()
        with contextlib.suppress(OSError):
            shutil.copy(tmp / "pg" / "server.log", LOG_DIR / "postgres.log")
        shutil.rmtree(tmp, ignore_errors=True)

    recoveries = [f["recovery_s"] for f in faults.log if f["recovery_s"] is not None]
    result = {
        "seconds": seconds,
        "accepted": checked["accepted"],
        "completed": checked["completed"],
        "failed": checked["failed"],
        "lost": checked["lost"],
        "stuck": checked["stuck"],
        "duplicate_merges": checked["duplicate_merges"],
        "faults": dict(faults.counts),
        "max_recovery_s": max(recoveries) if recoveries else None,
        "details": {
            "max_recovery_s_means": (
                "after each fault ended, seconds until a new probe conversation (re-POSTed "
                "after any 503 or connection error) read completed"
            ),
            "duplicate_merges_means": (
                "(queue_id, version) pairs with more than one row in prospect_merges"
                if checked["duplicate_merges"] is not None
                else "not measurable: this schema has no prospect_merges ledger"
            ),
            "seed": seed,
            "drain_s": round(drained_s, 1),
            "rows": checked["rows"],
            "accepted_posts": ledger.accepted_posts,
            "failed_without_reason": checked["failed_without_reason"],
            "dead_letters": dead_letters,
            "broker_backlog_after_drain": backlog,
            "worker_thread_deaths": thread_deaths(LOG_DIR),
            "unrecovered_or_skipped_faults": dict(faults.errors),
            "process_restarts": dict(supervisor.restarts),
            "http_answers": dict(sorted(ledger.statuses.items())),
            "slowest_answer_s": ledger.slowest,
            "anomalies": dict(ledger.anomalies),
            "claude_stub": stub_outcomes,
            "failure_reasons": checked["failure_reasons"],
            "lost_rows": checked["lost_rows"],
            "stuck_rows": checked["stuck_rows"],
            "failed_without_reason_rows": checked["failed_without_reason_rows"],
            "fault_log": faults.log,
        },
    }
    return result


def main() -> int:
    seconds = seconds_setting()
    raw_seed = os.environ.get("CHAOS_SEED", "").strip()
    if raw_seed and not raw_seed.isdigit():
        raise SystemExit(f"CHAOS_SEED must be a whole number, got {raw_seed!r}")
    seed = int(raw_seed) if raw_seed else random.randrange(1 << 30)

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    print(f"chaos: {seconds} s of traffic and faults (seed {seed}); logs in {LOG_DIR}", flush=True)
    try:
        result = run(seconds, seed)
    except KeyboardInterrupt:
        print("chaos: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    details = result["details"]
    for key in ("slowest_answer_s", "process_restarts", "unrecovered_or_skipped_faults",
                "anomalies", "worker_thread_deaths", "broker_backlog_after_drain",
                "failure_reasons", "lost_rows", "stuck_rows"):  # fmt: skip
        if details[key]:
            print(f"{key}: {json.dumps(details[key], ensure_ascii=False)}")
    print_table(result)
    if result["duplicate_merges"] is None:
        print("duplicate_merges: not measurable (no prospect_merges table in this schema)")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    bad = result["lost"] or result["stuck"] or details["failed_without_reason"]
    return 1 if bad or result["duplicate_merges"] else 0


if __name__ == "__main__":
    sys.exit(main())
