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

Then faults and traffic stop and the system drains.  The verdict, per accepted session (a 202
``accepted`` answer; a 503, 4xx or connection error is a rejection, not a loss):

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
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import psycopg2.extras

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from chaos_stub import PROBE_MARK, ClaudeStub  # noqa: E402

from nexus import config, db, migrations  # noqa: E402
from nexus.broker import LEASE_MS  # noqa: E402
from nexus.embedded import EmbeddedServer  # noqa: E402
from nexus.smoke import free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "chaos.json"
LOG_DIR = ROOT / ".pgdata" / "chaos-logs"
DEFAULT_SECONDS = 120
CLIENTS = 4  #: traffic threads
PAUSE_S = (0.05, 0.2)  #: pause between one client's requests (seconds, uniform)
FAULT_GAP_S = (1.0, 4.0)  #: pause between the end of one fault's recovery and the next fault
STOP_PAST_LEASE_S = 3.0  #: a SIGSTOPped worker stays stopped LEASE_MS + this long
LOCK_HOLD_S = 10.0  #: seconds an ACCESS EXCLUSIVE lock is held
RECOVERY_TIMEOUT_S = 120.0  #: a probe that has not completed by then marks the fault unrecovered
DRAIN_TIMEOUT_S = 180.0  #: after traffic stops: > the sweeper's 30 s + backoff + a hung call
HTTP_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0  #: SIGTERM, then SIGKILL of a process group after this long
MAX_BODY_BYTES = 1024 * 1024
WORKER_ENV = {
    "NEXUS_EXTRACTOR": "claude",
    "ANTHROPIC_API_KEY": "chaos-key",
    "NEXUS_MIN_BACKOFF_MS": "200",
    "NEXUS_MAX_BACKOFF_MS": "2000",
    "NEXUS_MAX_RETRIES": "10",
    "NEXUS_DEBOUNCE_MS": "500",  # read once the pipeline-v2 branch is merged; ignored before
}
FAULT_KINDS = (
    "sigkill_worker",
    "sigstop_worker",
    "terminate_backends",
    "restart_pg_fast",
    "restart_pg_immediate",
    "lock_nexus_queue",
    "lock_broker_messages",
)

USER_LINES = (
    "Hola, me llamo {name}",
    "Quiero saber sobre las oportunidades de inversión",
    "Trabajo en una empresa de logística",
    "¿Cuánto cuesta empezar?",
    "No tengo mucho tiempo, la verdad",
    "Mi teléfono es +34 612 345 678",
    "Soy estudiante y busco ingresos extra",
    "No me interesa, gracias",
)
ASSISTANT_LINES = ("¡Hola! ¿En qué puedo ayudarte?", "Claro, te cuento.", "¿Algo más?")
NAMES = ("Juan Pérez", "Ana Gómez", "Luis Martín", "Marta Ruiz")


def seconds_setting() -> int:
    raw = os.environ.get("CHAOS_SECONDS", "").strip()
    if not raw:
        return DEFAULT_SECONDS
    if not raw.isdigit() or not 5 <= int(raw) <= 86_400:
        raise SystemExit(f"CHAOS_SECONDS must be a whole number of seconds 5..86400, got {raw!r}")
    return int(raw)


# -- what was accepted, and the verdict ------------------------------------------------------


@dataclass
class Expected:
    """The latest version of a session the client was told was accepted."""

    messages: list[dict]
    exact: bool = True  #: False for hostile bodies the server may have cleaned before storing
    queue_id: str | None = None


class Ledger:
    """Thread-safe record of every accepted conversation and every answer seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.expected: dict[str, Expected] = {}
        self.statuses: Counter[str] = Counter()
        self.anomalies: Counter[str] = Counter()
        self.accepted_posts = 0

    def answer(self, what: str, status: int) -> None:
        with self.lock:
            self.statuses[f"{what} {status or 'conn-error'}"] += 1
            if status >= 500 and status != 503:
                self.anomalies[f"{what} answered {status}"] += 1

    def accepted(self, session: str, messages: list[dict], reply: dict, exact=True) -> None:
        with self.lock:
            self.accepted_posts += 1
            known = self.expected.get(session)
            if known and known.queue_id and known.queue_id != reply.get("queueId"):
                self.anomalies["same session answered with another queueId"] += 1
            if known and len(messages) < len(known.messages):
                return  # a strict-prefix resend: the longer accepted version stands
            self.expected[session] = Expected(list(messages), exact, reply.get("queueId"))

    def anomaly(self, what: str) -> None:
        with self.lock:
            self.anomalies[what] += 1


QUEUE_ROWS = """
    SELECT session_id, id::text AS id, status, version, retry_count, error_message, messages,
           extract(epoch FROM updated_at) AS updated_at
    FROM nexus_queue
"""
DUPLICATE_MERGES = """
    SELECT count(*) FROM (
        SELECT queue_id, version FROM prospect_merges GROUP BY 1, 2 HAVING count(*) > 1
    ) AS twice
"""


def extends(stored: list, expected: list) -> bool:
    return len(stored) >= len(expected) and stored[: len(expected)] == expected


def verdict(conn, expected: dict[str, Expected]) -> dict:
    """Compare the database with what was accepted (see the module docstring)."""
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(QUEUE_ROWS)
        rows = {row["session_id"]: row for row in cur.fetchall()}
        cur.execute("SELECT to_regclass('public.prospect_merges') IS NOT NULL AS present")
        has_ledger = cur.fetchone()["present"]
        duplicate_merges = None
        if has_ledger:
            cur.execute(DUPLICATE_MERGES)
            duplicate_merges = cur.fetchone()["count"]
    lost, stuck, unexplained = [], [], []
    for session, want in expected.items():
        row = rows.get(session)
        if row is None:
            lost.append({"session": session, "why": "no row"})
            continue
        stored = row["messages"]
        ok = extends(stored, want.messages) if want.exact else len(stored) >= len(want.messages)
        if not ok:
            lost.append({"session": session, "id": row["id"], "status": row["status"],
                         "why": f"stored {len(stored)} messages, not the accepted "
                                f"{len(want.messages)} (older or other version)"})  # fmt: skip
    for row in rows.values():
        brief = {k: row[k] for k in ("session_id", "id", "status", "version", "retry_count")}
        if row["status"] not in ("completed", "failed"):
            stuck.append(brief)
        elif row["status"] == "failed" and not (row["error_message"] or "").strip():
            unexplained.append(brief)
    statuses = Counter(row["status"] for s, row in rows.items() if s in expected)
    reasons = Counter(
        (row["error_message"] or "")[:80] for row in rows.values() if row["status"] == "failed"
    )
    return {
        "accepted": len(expected),
        "completed": statuses["completed"],
        "failed": statuses["failed"],
        "lost": len(lost),
        "stuck": len(stuck),
        "duplicate_merges": duplicate_merges,
        "failed_without_reason": len(unexplained),
        "rows": len(rows),
        "lost_rows": lost[:20],
        "stuck_rows": stuck[:20],
        "failed_without_reason_rows": unexplained[:20],
        "failure_reasons": dict(reasons.most_common(10)),
    }


# -- processes ---------------------------------------------------------------------------------


def procfile_commands() -> dict[str, str]:
    commands = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, cmd = line.partition(":")
        if sep and name.strip() and not line.startswith("#"):
            commands[name.strip()] = cmd.strip()
    return commands


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (the dramatiq CLI's worker processes)."""
    try:
        tasks = Path(f"/proc/{pid}/task")
        return [int(p) for t in tasks.iterdir() for p in (t / "children").read_text().split()]
    except OSError:
        return []


class Supervisor:
    """Starts the Procfile's processes, restarts any that exits, stops them all at the end."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        procfile = procfile_commands()
        self.port = free_port()
        web = procfile["web"].replace("0.0.0.0:", "127.0.0.1:")
        if "127.0.0.1:" not in web:
            raise SystemExit("the Procfile's web line no longer binds 0.0.0.0:$PORT; update me")
        self.commands = {
            "web": web,
            "worker1": procfile["worker"],
            "worker2": procfile["worker"],
            "clock": procfile["clock"],
        }
        self.env = {**env, "PORT": str(self.port)}
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self.killed: set[int] = set()  # CLI pids whose worker the harness SIGKILLed
        self.stopped: set[int] = set()  # pids SIGSTOPped right now
        self.restarts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in self.commands:
            self._spawn(name)
        self.thread.start()

    def _spawn(self, name: str) -> None:
        with open(self.log_dir / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                ["bash", "-c", "exec " + self.commands[name]],
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed as a whole at the end
            )

    def _watch(self) -> None:
        while not self.stopping.wait(0.2):
            with self.lock:
                for name, proc in list(self.procs.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    _killpg(proc.pid, signal.SIGKILL)  # leftovers of its group
                    reason = "after SIGKILL" if proc.pid in self.killed else f"exit {code}"
                    self.killed.discard(proc.pid)
                    self.restarts[f"{name} {reason}"] += 1
                    self._spawn(name)

    def worker_pid(self, name: str) -> int | None:
        """The pid of the process that runs jobs under the ``name`` CLI (or the CLI itself)."""
        with self.lock:
            proc = self.procs[name]
            if proc.poll() is not None:
                return None
            children = child_pids(proc.pid)
            return children[0] if children else None

    def sigkill_worker(self, name: str) -> bool:
        with self.lock:
            proc = self.procs[name]
            children = child_pids(proc.pid)
            if proc.poll() is not None or not children:
                return False
            self.killed.add(proc.pid)
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return True

    def stop_all(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(5)
        for pid in list(self.stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        for proc in self.procs.values():
            _killpg(proc.pid, signal.SIGCONT)
            _killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)

    def wait_web(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if request(self.port, "GET", "/api/nexus/producer", timeout=2)[0] == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"web did not answer within {timeout:.0f} s; see {self.log_dir}")


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


# -- HTTP --------------------------------------------------------------------------------------


def request(port, method, path, body=b"", content_type="application/json", timeout=None):
    """``(status, parsed JSON or None)``; status 0 on a connection error or timeout."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout or HTTP_TIMEOUT_S)
    try:
        conn.request(method, path, body=body or None, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        raw = resp.read()
    except (OSError, http.client.HTTPException):
        return 0, None
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, None


def post_json(port: int, body: dict) -> tuple[int, dict | None]:
    return request(port, "POST", "/api/nexus/producer", json.dumps(body).encode())


# -- traffic -----------------------------------------------------------------------------------


@dataclass
class Session:
    id: str
    fingerprint: str | None
    messages: list[dict] = field(default_factory=list)  #: the latest version sent
    accepted: list[dict] | None = None  #: the latest version answered 202


#: Hostile bodies: kind -> must it be accepted (True), refused (False), or either (None).
HOSTILE = {
    "malformed_json": False,
    "not_json_content_type": False,
    "over_1mib": False,
    "deep_nesting": False,
    "wrong_types": False,
    "wrong_role": False,
    "too_many_messages": False,
    "lone_surrogates": None,
    "nul_char": None,
    "long_message_100k": True,
    "near_1mib": True,
}


def hostile_body(kind: str, session: str) -> tuple[bytes, str]:
    """``(body, content type)`` of one hostile request (built only when sent: some are 1 MiB)."""
    ok = {"role": "user", "content": "hola"}
    big = MAX_BODY_BYTES - 300

    def body(messages, **extra) -> bytes:
        return json.dumps({"messages": messages, "sessionId": session, **extra}).encode()

    if kind == "malformed_json":
        return b'{"messages": [{"role": "user", "content": "ho', "application/json"
    if kind == "not_json_content_type":
        return b"messages=hola", "text/plain"
    if kind == "over_1mib":
        return body([{"role": "user", "content": "x" * (big + 400)}]), "application/json"
    if kind == "deep_nesting":
        nested = "[" * 200 + "1" + "]" * 200
        text = body([ok]).decode()[:-1] + f', "metadata": {{"a": {nested}}}}}'
        return text.encode(), "application/json"
    if kind == "wrong_types":
        return json.dumps({"messages": "hola", "sessionId": 7}).encode(), "application/json"
    if kind == "wrong_role":
        return body([{"role": "system", "content": "x"}]), "application/json"
    if kind == "too_many_messages":
        return body([ok] * 201), "application/json"
    if kind == "lone_surrogates":  # escaped in the JSON text, as a buggy client would send
        text = body([{"role": "user", "content": "hola SURR adiSURRos"}]).decode()
        return text.replace("SURR", "\\ud800", 1).replace("SURR", "\\udfff").encode(), (
            "application/json"
        )
    if kind == "nul_char":
        text = body([{"role": "user", "content": "aNULb"}]).decode()
        return text.replace("NUL", "\\u0000").encode(), "application/json"
    if kind == "long_message_100k":
        return body([ok, {"role": "user", "content": "a" * 100_000}]), "application/json"
    if kind == "near_1mib":
        return body([{"role": "user", "content": "b" * big}]), "application/json"
    raise ValueError(kind)


class Client(threading.Thread):
    """One widget-like client: its own sessions, sent one request at a time."""

    def __init__(self, index: int, port: int, ledger: Ledger, until: float, seed: int):
        super().__init__(name=f"client{index}", daemon=True)
        self.index, self.port, self.ledger, self.until = index, port, ledger, until
        self.rng = random.Random(seed)
        self.sessions: list[Session] = []
        self.run_id = uuid.uuid4().hex[:6]

    def run(self) -> None:
        actions = ("new", "longer", "prefix", "identical", "hostile")
        weights = (25, 35, 12, 12, 16)
        while time.monotonic() < self.until:
            action = self.rng.choices(actions, weights)[0]
            getattr(self, action)()
            time.sleep(self.rng.uniform(*PAUSE_S))  # pacing, not synchronisation

    def _user_line(self) -> str:
        return self.rng.choice(USER_LINES).format(name=self.rng.choice(NAMES))

    def _send(self, session: Session, messages: list[dict], what: str) -> dict | None:
        body = {"messages": messages, "sessionId": session.id}
        if session.fingerprint:
            body["fingerprint"] = session.fingerprint
        status, reply = post_json(self.port, body)
        self.ledger.answer(what, status)
        if status == 202 and reply and reply.get("status") == "accepted":
            self.ledger.accepted(session.id, messages, reply)
            if session.accepted is None or len(messages) >= len(session.accepted):
                session.accepted = list(messages)
            return reply
        if status == 202:
            self.ledger.anomaly("202 without status accepted")
        return None

    def new(self) -> None:
        n = len(self.sessions)
        fingerprint = self.rng.choice((None, *(f"fp-chaos-{i}" for i in range(40))))
        session = Session(f"chaos-{self.run_id}-{self.index}-{n}", fingerprint)
        session.messages = [{"role": "user", "content": self._user_line()}]
        self.sessions.append(session)
        self._send(session, session.messages, "new")

    def _pick(self, accepted_min: int = 0) -> Session | None:
        pool = [s for s in self.sessions[-50:] if len(s.accepted or ()) >= accepted_min]
        return self.rng.choice(pool) if pool else None

    def longer(self) -> None:
        session = self._pick()
        if session is None or len(session.messages) > 190:
            return self.new()
        # The widget resends the whole chat: everything sent before, answered or not.
        session.messages = session.messages + [
            {"role": "assistant", "content": self.rng.choice(ASSISTANT_LINES)},
            {"role": "user", "content": self._user_line()},
        ]
        self._send(session, session.messages, "longer")

    def prefix(self) -> None:
        session = self._pick(accepted_min=2)
        if session is None:
            return self.new()
        cut = self.rng.randrange(1, len(session.accepted))
        reply = self._send(session, session.accepted[:cut], "prefix")
        if reply is not None and reply.get("duplicate") is not True:
            self.ledger.anomaly("strict-prefix resend not answered duplicate")

    def identical(self) -> None:
        session = self._pick(accepted_min=1)
        if session is None:
            return self.new()
        reply = self._send(session, session.accepted, "identical")
        if reply is not None and reply.get("duplicate") is not True:
            self.ledger.anomaly("identical resend not answered duplicate")

    def hostile(self) -> None:
        sid = f"hostile-{self.run_id}-{self.index}-{len(self.sessions)}-{self.rng.random():.6f}"
        kind = self.rng.choice(list(HOSTILE))
        valid = HOSTILE[kind]
        body, ctype = hostile_body(kind, sid)
        status, reply = request(self.port, "POST", "/api/nexus/producer", body, ctype)
        self.ledger.answer(f"hostile {kind}", status)
        if status == 202 and reply and reply.get("status") == "accepted":
            if valid is False:
                self.ledger.anomaly(f"hostile {kind} accepted")
            sent = json.loads(body)["messages"]
            self.ledger.accepted(sid, sent, reply, exact=valid is True)
        elif valid is True and status not in (0, 503):
            self.ledger.anomaly(f"valid {kind} refused with {status}")
        elif 200 <= status < 300:
            self.ledger.anomaly(f"hostile {kind} answered {status}")


# -- faults ------------------------------------------------------------------------------------


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
            if recovery is None:
                self.errors[f"{kind}: no recovery within {RECOVERY_TIMEOUT_S:.0f} s"] += 1

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
        self.halt.wait(self.rng.uniform(0.2, 2.0))
        self.server.start()
        return True

    def restart_pg_immediate(self) -> bool:
        proc = self.server.process
        proc.send_signal(signal.SIGQUIT)  # immediate shutdown: crash recovery at next start
        proc.wait(30)
        self.server.process = None
        self.halt.wait(self.rng.uniform(0.2, 2.0))
        self.server.start()
        return True

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
                status, reply = post_json(self.sup.port, {"messages": messages,
                                                          "sessionId": session})  # fmt: skip
                self.ledger.answer("probe", status)
                if status == 202 and reply:
                    queue_id = reply["queueId"]
                    self.ledger.accepted(session, messages, reply)
            elif self._status(queue_id) in ("completed", "failed"):
                return time.monotonic() - fault_ended
            time.sleep(0.05)  # polling interval
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


# -- the run -----------------------------------------------------------------------------------


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
            print(f"traffic and faults over after {traffic_s:.0f} s; draining ...", flush=True)
            drained_s = drain(url, DRAIN_TIMEOUT_S)
            with contextlib.closing(psycopg2.connect(url, connect_timeout=10)) as conn:
                checked = verdict(conn, ledger.expected)
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
            "unrecovered_or_skipped_faults": dict(faults.errors),
            "process_restarts": dict(supervisor.restarts),
            "http_answers": dict(sorted(ledger.statuses.items())),
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
    seed = int(os.environ.get("CHAOS_SEED", "") or random.randrange(1 << 30))

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    print(f"chaos: {seconds} s of traffic and faults (seed {seed}); logs in {LOG_DIR}", flush=True)
    result = run(seconds, seed)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    details = result["details"]
    for key in ("process_restarts", "unrecovered_or_skipped_faults", "anomalies",
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
