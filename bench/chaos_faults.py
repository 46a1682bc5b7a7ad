"""The faults of ``make chaos``, one at a time, each followed by a recovery probe.

SIGKILL of a worker (the supervisor restarts it), SIGSTOP of a worker for longer than its
lease then SIGCONT, ``pg_terminate_backend`` of every client backend, a fast and an immediate
PostgreSQL restart, and an ACCESS EXCLUSIVE lock on ``nexus_queue`` or ``broker_messages``
held for 10 s.  Every kind comes once in random order, then again, until the traffic stops.

Recovery: after a fault ends (process killed, process continued, backends gone, server back
up, lock released), the seconds until a new probe conversation -- POSTed again after any 503
or connection error -- reads completed.  The Claude stub always answers probes well.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter

import psycopg2
from chaos_stub import PROBE_MARK
from chaos_traffic import post_json

from nexus.broker import LEASE_MS

FAULT_GAP_S = (0.5, 3.0)  #: pause between the end of one fault's recovery and the next fault
STOP_PAST_LEASE_S = 3.0  #: a SIGSTOPped worker stays stopped LEASE_MS + this long
LOCK_HOLD_S = 10.0  #: seconds an ACCESS EXCLUSIVE lock is held
START_ATTEMPTS = 3  #: tries to start PostgreSQL again after a restart fault
RECOVERY_TIMEOUT_S = 120.0  #: a probe that has not completed by then marks the fault unrecovered
FAULT_KINDS = (
    "sigkill_worker",
    "sigstop_worker",
    "terminate_backends",
    "restart_pg_fast",
    "restart_pg_immediate",
    "lock_nexus_queue",
    "lock_broker_messages",
)


class Faults(threading.Thread):
    """Inject one fault at a time, each followed by a recovery probe, until ``until``."""

    def __init__(self, server, supervisor, ledger, url, until, seed):
        super().__init__(name="faults", daemon=True)
        self.server, self.sup, self.ledger, self.url = server, supervisor, ledger, url
        self.until = until
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.log: list[dict] = []
        self.started = time.monotonic()
        self.halt = threading.Event()  #: set by the harness at the very end
        self.done = threading.Event()  #: set when the last fault is over

    def run(self) -> None:
        try:
            self._inject()
        finally:
            self.done.set()
        # Stay alive until the end: a server this thread restarted gets PR_SET_PDEATHSIG from
        # it (Linux ties the parent-death signal to the thread), so its exit would stop it.
        self.halt.wait()

    def _inject(self) -> None:
        order: list[str] = []
        while not self.halt.wait(self.rng.uniform(*FAULT_GAP_S)):
            if time.monotonic() >= self.until:
                return
            if not order:  # every kind once, in random order, then again
                order = self.rng.sample(FAULT_KINDS, len(FAULT_KINDS))
            kind = order.pop()
            began = time.monotonic()
            try:
                done = getattr(self, kind)()
            except Exception as exc:  # a fault that could not be injected is reported
                self.errors[f"{kind}: {type(exc).__name__}: {exc}"[:160]] += 1
                continue
            if not done:
                self.errors[f"{kind}: not applicable right now"] += 1
                continue
            ended = time.monotonic()
            self.counts[kind] += 1
            recovery = self.probe(ended)
            entry = {"kind": kind, "at_s": round(began - self.started, 1),
                     "lasted_s": round(ended - began, 1), "recovery_s": recovery}  # fmt: skip
            if recovery is not None:
                entry["recovery_s"] = round(recovery, 2)
            self.log.append(entry)

    # each fault returns True once injected, and returns when it is over

    def sigkill_worker(self) -> bool:
        return self.sup.sigkill_worker(self.rng.choice(("worker1", "worker2")))

    def sigstop_worker(self) -> bool:
        pid = self.sup.worker_pid(self.rng.choice(("worker1", "worker2")))
        if pid is None:
            return False
        os.kill(pid, signal.SIGSTOP)
        self.sup.stopped.add(pid)
        try:
            self.halt.wait(LEASE_MS / 1000 + STOP_PAST_LEASE_S)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            self.sup.stopped.discard(pid)
        return True

    def terminate_backends(self) -> bool:
        with contextlib.closing(self._connect()) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
        return True

    def restart_pg_fast(self) -> bool:
        self.server.stop()  # SIGINT: fast shutdown
        self._start_server()
        return True

    def restart_pg_immediate(self) -> bool:
        proc = self.server.process
        proc.send_signal(signal.SIGQUIT)  # immediate shutdown: crash recovery at next start
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.server.process = None
        self._start_server()
        return True

    def _start_server(self) -> None:
        """Down for a moment, then up again; a failed start is retried (the run needs it)."""
        self.halt.wait(self.rng.uniform(0.2, 2.0))
        for attempt in range(START_ATTEMPTS):
            try:
                self.server.start()
                return
            except Exception as exc:
                self.errors[f"server start failed: {type(exc).__name__}"[:160]] += 1
                if attempt == START_ATTEMPTS - 1:
                    raise

    def lock_nexus_queue(self) -> bool:
        return self._hold_lock("nexus_queue")

    def lock_broker_messages(self) -> bool:
        return self._hold_lock("broker_messages")

    def _hold_lock(self, table: str) -> bool:
        with contextlib.closing(self._connect(autocommit=False)) as conn, conn.cursor() as cur:
            cur.execute("SET lock_timeout = '5s'")
            cur.execute(f"LOCK TABLE public.{table} IN ACCESS EXCLUSIVE MODE")
            self.halt.wait(LOCK_HOLD_S)  # the fault itself: hold the lock this long
            conn.rollback()
        return True

    def _connect(self, autocommit: bool = True):
        conn = psycopg2.connect(self.url, connect_timeout=5)
        conn.autocommit = autocommit
        return conn

    # recovery

    def probe(self, fault_ended: float) -> float | None:
        """Seconds from ``fault_ended`` until a new probe conversation reads completed."""
        session = f"probe-{uuid.uuid4().hex[:10]}"
        messages = [{"role": "user", "content": f"Hola, me llamo Ana Gómez ({PROBE_MARK})"}]
        deadline = fault_ended + RECOVERY_TIMEOUT_S
        queue_id = None
        while time.monotonic() < deadline and not self.halt.is_set():
            if queue_id is None:
                started = time.monotonic()
                body = {"messages": messages, "sessionId": session}
                status, reply = post_json(self.sup.port, body)
                self.ledger.answer("probe", status, time.monotonic() - started)
                if status == 202 and reply:
                    queue_id = reply["queueId"]
                    self.ledger.accepted(session, messages, reply)
            else:
                status = self._status(queue_id)
                if status == "completed":
                    return time.monotonic() - fault_ended
                if status == "failed":  # the stub answers probes well: the system failed it
                    self.errors["a recovery probe ended failed"] += 1
                    return None
            time.sleep(0.05)  # polling interval
        if not self.halt.is_set():
            self.errors[f"no recovery within {RECOVERY_TIMEOUT_S:.0f} s"] += 1
        return None

    def _status(self, queue_id: str) -> str | None:
        try:
            with contextlib.closing(self._connect()) as conn, conn.cursor() as cur:
                cur.execute("SET statement_timeout = '5s'")
                cur.execute("SELECT status FROM nexus_queue WHERE id = %s", (queue_id,))
                row = cur.fetchone()
                return row and row[0]
        except psycopg2.Error:
            return None
