"""The broker benchmark's measurements, run inside the interpreter of the broker measured.

    python bench/broker_scenarios.py --broker nexus --url postgresql://... --work-dir DIR

``bench/broker.py`` runs this once with the project's Python (``nexus``) and once with the
peer's own venv (``dramatiq-postgres``), and reads the JSON printed on the last line.  Every
timing is taken the same way for both: the actor of ``broker_actors.py`` logs its start
(``time.time()``) and we compare with the time taken just before the send.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
CHECKOUT = BENCH.parent

ENQUEUES = 2_000  #: sequential sends timed for enqueue_per_s
DRAIN = 5_000  #: messages queued before the worker starts
DRAIN_THREADS = 8
LATENCY_SENDS = 200  #: one at a time on an idle worker
IDLE_GAP = 0.01  #: seconds between two latency sends
DELAYED = 100  #: messages sent at once with delays spread over DELAY_RANGE_MS
DELAY_RANGE_MS = (100, 1_000)
READY_TIMEOUT = 60.0  #: seconds for a worker process to start
WAIT_TIMEOUT = 120.0  #: seconds for any batch of messages to run


class Log:
    """Reads the starts logged by the actors, as they come."""

    def __init__(self, path: Path):
        self.path = path
        path.touch()
        self._file = open(path)  # noqa: SIM115 - kept open, read incrementally
        self._partial = ""
        self.starts: dict[str, list[tuple[int, float]]] = {}

    def poll(self) -> None:
        data = self._partial + self._file.read()
        lines = data.split("\n")
        self._partial = lines.pop()
        for line in lines:
            key, pid, at = line.split()
            self.starts.setdefault(key, []).append((int(pid), float(at)))

    def wait(self, keys, timeout: float = WAIT_TIMEOUT, count: int = 1) -> None:
        """Wait until each of ``keys`` started ``count`` times."""
        keys = list(keys)
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while True:
            self.poll()
            if all(len(self.starts.get(k, ())) >= count for k in keys):
                return
            if time.monotonic() > deadline:
                missing = sum(len(self.starts.get(k, ())) < count for k in keys)
                raise TimeoutError(f"{missing} message(s) did not start within {timeout:.0f} s")
            pause.wait(0.0005)


class Bench:
    def __init__(self, kind: str, url: str, work_dir: Path):
        self.kind, self.url, self.work_dir = kind, url, work_dir
        self.log = Log(work_dir / f"{kind}-starts.log")
        os.environ.update(BENCH_BROKER=kind, DATABASE_URL=url, BENCH_LOG=str(self.log.path))
        sys.path.insert(0, str(BENCH))
        import broker_actors  # the same actors, on the same broker, as the workers

        self.actors = broker_actors
        self.workers: list[subprocess.Popen] = []
        self._probes = 0

    # -- database ------------------------------------------------------------------------

    def _sql(self, statement: str):
        if self.kind == "nexus":
            import psycopg2

            conn = psycopg2.connect(self.url)
            conn.autocommit = True
        else:
            import psycopg

            conn = psycopg.connect(self.url, autocommit=True)
        try:
            cur = conn.cursor()
            cur.execute(statement)
            return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    def pending(self) -> int:
        table = "broker_messages" if self.kind == "nexus" else "dramatiq.queue"
        extra = "" if self.kind == "nexus" else " WHERE state <> 'rejected'"
        return self._sql(f"SELECT count(*) FROM {table}{extra}")[0][0]

    def clear(self) -> None:
        self._sql(
            "DELETE FROM broker_messages" if self.kind == "nexus" else "DELETE FROM dramatiq.queue"
        )

    # -- workers -------------------------------------------------------------------------

    def start_worker(self, threads: int, prefetch: int | None = None) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CHECKOUT), str(BENCH)])}
        if prefetch:
            env["dramatiq_queue_prefetch"] = str(prefetch)
        out = open(self.work_dir / f"{self.kind}-worker{len(self.workers)}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "broker_actors", "-p", "1", "-t", str(threads)],
            env=env,
            cwd=BENCH,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)
        return proc

    def probe(self) -> int:
        """Send a message and wait for a worker to run it; the pid that did."""
        self._probes += 1
        key = f"probe{self._probes}"
        self.actors.noop.send(key)
        self.log.wait([key], READY_TIMEOUT)
        return self.log.starts[key][0][0]

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.workers = []

    # -- measurements --------------------------------------------------------------------

    def enqueue_rate(self) -> float:
        send = self.actors.noop.send
        started = time.perf_counter()
        for i in range(ENQUEUES):
            send(f"e{i}")
        elapsed = time.perf_counter() - started
        self.clear()
        return ENQUEUES / elapsed

    def drain_rate(self) -> float:
        keys = [f"d{i}" for i in range(DRAIN)]
        for key in keys:
            self.actors.noop.send(key)
        self.start_worker(DRAIN_THREADS)
        self.log.wait(keys)
        pause = threading.Event()
        while self.pending():
            pause.wait(0.002)
        done = time.time()
        first = min(self.log.starts[k][0][1] for k in keys)
        return DRAIN / (done - first)

    def latency_ms(self) -> list[float]:
        self.probe()
        pause = threading.Event()
        samples = []
        for i in range(LATENCY_SENDS):
            key = f"l{i}"
            pause.wait(IDLE_GAP)
            sent = time.time()
            self.actors.noop.send(key)
            self.log.wait([key])
            samples.append((self.log.starts[key][0][1] - sent) * 1000)
        return samples

    def delay_lateness_ms(self) -> list[float]:
        rng = random.Random(7)
        due = {}
        for i in range(DELAYED):
            key, delay = f"t{i}", rng.randint(*DELAY_RANGE_MS)
            due[key] = time.time() + delay / 1000
            self.actors.noop.send_with_options(args=(key,), delay=delay)
        self.log.wait(due)
        return [(self.log.starts[k][0][1] - at) * 1000 for k, at in due.items()]

    def redelivery_s(self, timeout: float) -> float | None:
        """Worker A (one thread, prefetch 1) runs a job that hangs; worker B idles; A is
        SIGKILLed.  Seconds from the kill until B starts the job; None past ``timeout``."""
        self.stop_workers()
        self.start_worker(1, prefetch=1)
        self.probe()
        self.actors.hang.send("h")
        self.log.wait(["h"])
        victim = self.log.starts["h"][0][0]
        self.start_worker(1, prefetch=1)
        self.probe()  # A is full, so B answers: both are up
        killed = time.time()
        os.kill(victim, signal.SIGKILL)
        try:
            self.log.wait(["h"], timeout, count=2)
        except TimeoutError:
            return None
        return self.log.starts["h"][1][1] - killed


def percentiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": round(statistics.median(samples), 2), "p99": round(cuts[98], 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", choices=("nexus", "dramatiq-postgres"), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--redelivery-timeout", type=float, default=150.0)
    args = parser.parse_args()

    bench = Bench(args.broker, args.url, args.work_dir)
    try:
        result = {"enqueue_per_s": round(bench.enqueue_rate(), 1)}
        print(f"  enqueue: {result['enqueue_per_s']:.0f}/s", file=sys.stderr, flush=True)
        result["drain_per_s"] = round(bench.drain_rate(), 1)
        print(f"  drain: {result['drain_per_s']:.0f}/s", file=sys.stderr, flush=True)
        result["latency_ms"] = percentiles(bench.latency_ms())
        print(f"  latency: {result['latency_ms']}", file=sys.stderr, flush=True)
        result["delay_lateness_ms"] = percentiles(bench.delay_lateness_ms())
        print(f"  delay lateness: {result['delay_lateness_ms']}", file=sys.stderr, flush=True)
        redelivery = bench.redelivery_s(args.redelivery_timeout)
        result["redelivery_s"] = None if redelivery is None else round(redelivery, 2)
        print(f"  redelivery: {result['redelivery_s']} s", file=sys.stderr, flush=True)
    finally:
        bench.stop_workers()
        bench.actors.broker.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
