"""The Procfile's processes under a supervisor, as Heroku or systemd would run them.

web (gunicorn, bound to 127.0.0.1 instead of 0.0.0.0), two separate ``dramatiq`` worker
invocations (so each can be killed and restarted on its own) and the clock.  Any process that
exits -- a worker the harness SIGKILLed, or one that exited non-zero by itself -- is started
again at once, and the restart is counted by reason.  Each runs in its own process group, so
:meth:`Supervisor.stop_all` leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from chaos_traffic import request

from nexus.smoke import free_port

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 15.0  #: SIGTERM, then SIGKILL of a process group after this long
RESTART_GAP_S = 1.0  #: a process is started at most this often (no storm if it crash-loops)


def procfile_commands() -> dict[str, str]:
    """Process type -> command line, as the Procfile has them."""
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
        self.spawned: dict[str, float] = {}  # name -> monotonic time of its last start
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
        self.spawned[name] = time.monotonic()
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
                    if code is None or time.monotonic() - self.spawned[name] < RESTART_GAP_S:
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


def thread_deaths(log_dir: Path) -> dict[str, int]:
    """``Exception in thread NAME`` lines in the workers' logs, by process and thread: a
    background thread that died (silently, unless a watchdog makes the process exit)."""
    deaths: Counter[str] = Counter()
    for log in sorted(log_dir.glob("worker*.log")):
        for line in log.read_bytes().decode(errors="replace").splitlines():
            if line.startswith("Exception in thread "):
                deaths[f"{log.stem}: {line[len('Exception in thread ') :].rstrip(':')}"] += 1
    return dict(deaths)


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
