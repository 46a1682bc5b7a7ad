"""How every connection to PostgreSQL is opened: the one place for its bounded waits.

Every process (web, worker, broker threads, listener, clock, CLI, migrations) connects through
:func:`connect_args` (SQLAlchemy engines, via :func:`nexus.db.make_engine`) or :func:`connect`
(raw psycopg2), so each connection carries:

- a connect timeout (libpq's ``connect_timeout``, and the same deadline client-side);
- server-side ``statement_timeout``, ``lock_timeout`` and
  ``idle_in_transaction_session_timeout``, sent as startup ``options``;
- TCP keepalives and ``tcp_user_timeout``, so a peer that vanished is noticed by the kernel;
- a client-side deadline on every wait for the server (:func:`wait_with_deadline`).

Why the last one: the server-side timeouts only fire if the server runs, and the TCP ones only
if the peer's kernel stops answering.  A stopped server (SIGSTOP, a frozen VM) on loopback
still completes TCP handshakes and acknowledges data, so without a client-side bound a query
or the pool's pre-ping waits forever.  psycopg2 offers one hook for that: a wait callback
(:func:`psycopg2.extensions.set_wait_callback`), which turns every connection into a
non-blocking one that calls back whenever it must wait.  Ours waits in ``select()`` until the
connection's deadline, then raises :class:`psycopg2.OperationalError`; psycopg2 then closes
the connection (a half-read protocol stream cannot be reused), so SQLAlchemy's pool discards it.
Connections not opened here (a library's own) wait without a deadline, as before.
"""

from __future__ import annotations

import select
import time
from dataclasses import dataclass

import psycopg2
import psycopg2.extensions

#: Seconds to open a connection, TCP and authentication included (libpq's minimum is 2).
CONNECT_TIMEOUT = 2
#: Milliseconds one statement may run before the server cancels it.
STATEMENT_TIMEOUT_MS = 3_000
#: Milliseconds a statement may wait for a lock (a table locked by ``CREATE INDEX``, an
#: operator's ``LOCK TABLE``) before it fails; below the statement timeout, so a lock wait
#: fails as a lock timeout.
LOCK_TIMEOUT_MS = 2_000
#: Milliseconds a session may sit idle inside a transaction before the server ends it (a
#: stopped client must not hold its row locks for long).
IDLE_IN_TRANSACTION_TIMEOUT_MS = 10_000
#: Milliseconds sent data may stay unacknowledged before the kernel drops the connection.
TCP_USER_TIMEOUT_MS = 5_000
#: TCP keepalive probes of an idle connection: first after this many seconds of silence...
KEEPALIVES_IDLE = 5
#: ... then every this many seconds, giving up after this many unanswered probes.
KEEPALIVES_INTERVAL = 2
KEEPALIVES_COUNT = 3
#: Seconds the client waits beyond ``statement_timeout`` for an answer before it gives the
#: connection up (the server normally answers first with its own timeout error).
CLIENT_MARGIN_S = 0.5

#: Migrations rewrite tables and build indexes: ten minutes per statement, and a minute to get
#: a lock (waiting for a concurrent upgrade's advisory lock included).
MIGRATION_STATEMENT_TIMEOUT_MS = 600_000
MIGRATION_LOCK_TIMEOUT_MS = 60_000


@dataclass(frozen=True)
class Bounds:
    """The waits of one kind of connection (milliseconds unless said)."""

    connect_timeout_s: int = CONNECT_TIMEOUT
    statement_timeout_ms: int = STATEMENT_TIMEOUT_MS
    lock_timeout_ms: int = LOCK_TIMEOUT_MS
    idle_in_transaction_ms: int = IDLE_IN_TRANSACTION_TIMEOUT_MS
    tcp_user_timeout_ms: int = TCP_USER_TIMEOUT_MS

    @property
    def query_deadline_s(self) -> float:
        """Seconds the client waits for any one answer of the server."""
        return self.statement_timeout_ms / 1000 + CLIENT_MARGIN_S

    @property
    def options(self) -> str:
        """The server-side timeouts as libpq's startup ``options``."""
        return (
            f"-c statement_timeout={self.statement_timeout_ms}"
            f" -c lock_timeout={self.lock_timeout_ms}"
            f" -c idle_in_transaction_session_timeout={self.idle_in_transaction_ms}"
        )


#: Every connection of the running system.
RUNTIME = Bounds()
#: ``nexus db upgrade`` and administrative statements (``CREATE DATABASE ... TEMPLATE``).
MIGRATION = Bounds(
    statement_timeout_ms=MIGRATION_STATEMENT_TIMEOUT_MS, lock_timeout_ms=MIGRATION_LOCK_TIMEOUT_MS
)


class BoundedConnection(psycopg2.extensions.connection):
    """A psycopg2 connection that carries its client-side deadlines (seconds)."""

    def __init__(self, dsn: str, *args, connect_deadline_s: float, query_deadline_s: float):
        # Set before connecting: the wait callback already reads them while connecting.
        self.connect_deadline_s = connect_deadline_s
        self.query_deadline_s = query_deadline_s
        self.connecting = True
        super().__init__(dsn, *args)
        self.connecting = False


class _Factory:
    """``connection_factory`` for psycopg2: a :class:`BoundedConnection` with ``bounds``."""

    def __init__(self, bounds: Bounds):
        self.bounds = bounds

    def __call__(self, dsn: str, *args) -> BoundedConnection:
        return BoundedConnection(
            dsn,
            *args,
            connect_deadline_s=float(self.bounds.connect_timeout_s),
            query_deadline_s=self.bounds.query_deadline_s,
        )


def connect_args(application_name: str, bounds: Bounds = RUNTIME) -> dict:
    """The keyword arguments of ``psycopg2.connect`` for a connection with bounded waits."""
    return {
        "connect_timeout": bounds.connect_timeout_s,
        "application_name": application_name,
        "options": bounds.options,
        "keepalives": 1,
        "keepalives_idle": KEEPALIVES_IDLE,
        "keepalives_interval": KEEPALIVES_INTERVAL,
        "keepalives_count": KEEPALIVES_COUNT,
        "tcp_user_timeout": bounds.tcp_user_timeout_ms,
        "connection_factory": _Factory(bounds),
    }


def connect(dsn: str, application_name: str, bounds: Bounds = RUNTIME) -> BoundedConnection:
    """A raw psycopg2 connection with bounded waits (``dsn`` a plain libpq URL)."""
    return psycopg2.connect(dsn, **connect_args(application_name, bounds))


def wait_with_deadline(conn) -> None:
    """psycopg2's wait callback: wait for the server, at most the connection's deadline.

    Called once per connection attempt and once per statement (its whole round trip).  On
    expiry it raises :class:`psycopg2.OperationalError`, and psycopg2 closes the connection.
    Plain connections (not :class:`BoundedConnection`) wait without a deadline.
    """
    if isinstance(conn, BoundedConnection):
        limit = conn.connect_deadline_s if conn.connecting else conn.query_deadline_s
    else:
        limit = None
    deadline = None if limit is None else time.monotonic() + limit
    poll = conn.poll
    while True:
        state = poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        if deadline is None:
            timeout = None
        else:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise _no_answer(conn, limit)
        if state == psycopg2.extensions.POLL_READ:
            ready = select.select([conn], [], [], timeout)[0]
        elif state == psycopg2.extensions.POLL_WRITE:
            ready = select.select([], [conn], [], timeout)[1]
        else:
            raise psycopg2.OperationalError(f"unexpected poll() state {state!r}")
        if not ready and deadline is not None and time.monotonic() >= deadline:
            raise _no_answer(conn, limit)


def _no_answer(conn, limit: float) -> psycopg2.OperationalError:
    what = "connecting" if getattr(conn, "connecting", False) else "waiting for a reply"
    return psycopg2.OperationalError(
        f"the database did not answer within {limit:g} s ({what}); connection closed"
    )


def install() -> None:
    """Make psycopg2 wait through :func:`wait_with_deadline` (process-wide; idempotent)."""
    if psycopg2.extensions.get_wait_callback() is not wait_with_deadline:
        psycopg2.extensions.set_wait_callback(wait_with_deadline)


install()
