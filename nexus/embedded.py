"""The embedded PostgreSQL server, and the one place that decides which database to use.

With ``DATABASE_URL`` set, that server is used.  Without it, a *holder* process (``nexus run``,
``nexus smoke``, the pytest session) starts PostgreSQL from the binaries that the ``pgserver``
wheel ships, with its data under ``.pgdata/`` in the checkout, and hands its URL to its children
through ``DATABASE_URL``.  Only the holder stops it: on exit, Ctrl-C or SIGTERM.  The server is
also told to shut down if the holder dies without cleaning up (``PR_SET_PDEATHSIG``), so no
postgres is ever left behind.

We drive ``initdb`` and ``postgres`` ourselves instead of ``pgserver.get_server()`` because its
handle list stops the server when *any* last handle exits, and we need exactly one owner.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2
from sqlalchemy.engine import URL

from .config import Settings
from .errors import ConfigError, NexusError

#: The checkout this package lives in (the project is installed in editable mode).
CHECKOUT = Path(__file__).resolve().parent.parent
#: Root of the git-ignored data folders, one per purpose (run, test, smoke ...).
DATA_ROOT = CHECKOUT / ".pgdata"
#: Seconds to wait for a starting server to accept connections.
START_TIMEOUT = 60.0
#: Seconds a fast shutdown may take before the server is killed.
STOP_TIMEOUT = 30.0
#: The unprivileged system user the server runs as when we are root (postgres refuses root).
SYSTEM_USER = "pgserver"
#: Settings of the embedded server.  Connections are budgeted: web + workers + clock + tests.
DEFAULT_SETTINGS = {"max_connections": "200", "shared_buffers": "128MB"}

_PR_SET_PDEATHSIG = 1


def bin_dir() -> Path:
    """The folder with the ``postgres`` and ``initdb`` binaries shipped by the pgserver wheel."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise NexusError("the pgserver package is not installed: run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _system_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SYSTEM_USER], check=True)
        return pwd.getpwnam(SYSTEM_USER)


def _open_path_to(path: Path) -> None:
    """As root, let the server's user traverse every folder down to ``path``."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        parent.chmod(mode | stat.S_IXOTH | stat.S_IXGRP)


def _die_with_parent() -> None:
    """Run in the server's child process: a fast shutdown if the holder dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


def url_for_socket(socket_dir: Path | str, port: int = 5432, database: str = "postgres") -> str:
    """A ``postgresql://`` URL for a server listening on a Unix socket in ``socket_dir``."""
    url = URL.create(
        "postgresql",
        username="postgres",
        database=database,
        query={"host": str(socket_dir), "port": str(port)},
    )
    return url.render_as_string(hide_password=False)


def running_url(data_dir: Path) -> str | None:
    """The URL of a server already running on ``data_dir``, or None."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir, status = int(lines[0]), int(lines[3]), lines[4], lines[7].strip()
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    if status != "ready":
        return None
    return url_for_socket(socket_dir, port)


class EmbeddedServer:
    """One PostgreSQL server on a data folder, owned by the process that started it."""

    def __init__(self, data_dir: Path, settings: dict[str, str] | None = None):
        self.data_dir = Path(data_dir).resolve()
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.process: subprocess.Popen | None = None
        self.url: str | None = None
        self._socket_dir: Path | None = None
        self._user = _system_user()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> str:
        """Start the server (initialising the folder if needed) and return its URL.

        If a server is already running on this folder (held by another process), its URL is
        returned and this object does not own it.
        """
        existing = running_url(self.data_dir)
        if existing:
            self.url = existing
            return existing
        self._initdb()
        if self._socket_dir is None:  # kept across restarts, so the URL stays the same
            self._socket_dir = self._pick_socket_dir()
        args = [str(bin_dir() / "postgres"), "-D", str(self.data_dir), "-k", str(self._socket_dir)]
        args += ["-c", "listen_addresses="]
        for key, value in self.settings.items():
            args += ["-c", f"{key}={value}"]
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self._user.pw_uid if self._user else None,
                group=self._user.pw_gid if self._user else None,
                extra_groups=[] if self._user else None,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        self.url = url_for_socket(self._socket_dir)
        self._wait_ready()
        return self.url

    def stop(self) -> None:
        """Fast shutdown (SIGINT): running transactions roll back, the server exits cleanly."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        """Stop the server and remove a temporary socket folder."""
        self.stop()
        if self._socket_dir and self._socket_dir != self.data_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the postmaster (for fault tests): the next start runs crash recovery."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers -----------------------------------------------------------------------------

    def _initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user:
            _open_path_to(self.data_dir.parent)
            os.chown(self.data_dir, self._user.pw_uid, self._user.pw_gid)
        self.data_dir.chmod(0o700)
        cmd = [str(bin_dir() / "initdb"), "-D", str(self.data_dir), "-U", "postgres"]
        cmd += ["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]
        result = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            user=self._user.pw_uid if self._user else None,
            group=self._user.pw_gid if self._user else None,
            extra_groups=[] if self._user else None,
        )
        if result.returncode != 0:
            raise NexusError(f"initdb failed in {self.data_dir}: {result.stderr.strip()}")

    def _pick_socket_dir(self) -> Path:
        # A Unix socket path is limited to 107 bytes; deep checkouts get a short temp folder.
        if len(str(self.data_dir / ".s.PGSQL.5432")) < 100:
            return self.data_dir
        path = Path(tempfile.mkdtemp(prefix="nexus-pg-"))
        path.chmod(0o777)
        return path

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                log = (self.data_dir / "server.log").read_text(errors="replace")[-2000:]
                raise NexusError(f"embedded PostgreSQL exited at start-up:\n{log}")
            try:
                psycopg2.connect(self.url, connect_timeout=2).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise NexusError("embedded PostgreSQL did not accept connections") from None
                time.sleep(0.05)


def resolve_url(settings: Settings, purpose: str = "run") -> str:
    """The database URL a non-holding process should use.

    ``DATABASE_URL`` if set; otherwise the embedded server of ``purpose`` if one is running.
    """
    if settings.database_url:
        return settings.database_url
    url = running_url(DATA_ROOT / purpose)
    if url:
        return url
    raise ConfigError(
        "DATABASE_URL is not set and no embedded server is running: use `make run`, "
        "or set DATABASE_URL"
    )


@contextlib.contextmanager
def database(settings: Settings, purpose: str = "run"):
    """Yield a database URL, holding an embedded server for the duration when needed."""
    if settings.database_url:
        yield settings.database_url
        return
    server = EmbeddedServer(DATA_ROOT / purpose)
    try:
        yield server.start()
    finally:
        server.close()
