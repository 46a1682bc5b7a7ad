"""Bounded waits: a locked table or a hung server gives callers a clear error, never a hang.

No timed assertion here: ``pytest.mark.timeout`` catches a hang (the call that would wait for
the lock holder, or forever for a stopped server), and the tests assert the outcome.  Its
thread method, because a hang inside libpq never returns to Python for a signal handler to
run (on 7ee8d2d the first locked-table case hung there: /api/nexus/stats waited for the lock).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator

import dramatiq
import pytest
import sqlalchemy as sa
from dramatiq import Message

from nexus import config, connection, db, migrations
from nexus.broker import PostgresBroker
from nexus.broker.listener import Listener
from nexus.errors import DatabaseUnavailable
from nexus.web import create_app
from tests.waiting import wait_for

SAMPLE = [{"role": "user", "content": "Hola, me llamo Juan Pérez"}]
URL = "/api/nexus/producer"
#: Seconds a test may take before it counts as hung (the bounded waits are a few seconds).
HANG = 60


def make_app(url: str):
    return create_app({"SETTINGS": config.load({}), "DATABASE_URL": url, "TESTING": True})


def post(client, session: str):
    body = {"messages": SAMPLE, "sessionId": session}
    return client.post(URL, data=json.dumps(body), content_type="application/json")


def message(broker: PostgresBroker) -> Message:
    broker.declare_queue("default")
    return Message(queue_name="default", actor_name="noop", args=(), kwargs={}, options={})


@contextlib.contextmanager
def locked(engine: sa.Engine, table: str, mode: str) -> Iterator[None]:
    """Another session holds ``LOCK TABLE table IN mode MODE`` until the block ends."""
    with engine.connect() as holder:
        holder.execute(sa.text(f"LOCK TABLE {table} IN {mode} MODE"))
        yield
        holder.rollback()


def server_pids(postmaster_pid: int) -> list[int]:
    """The postmaster and every process it started."""
    pids = [postmaster_pid]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster_pid:
            pids.append(int(entry))
    return pids


@contextlib.contextmanager
def stopped(server) -> Iterator[None]:
    """Every process of ``server`` SIGSTOPped (a hung server: TCP and the Unix socket still
    accept, nothing answers); SIGCONT at the end, whatever happens."""
    pids = server_pids(server.process.pid)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


# -- the settings are on every kind of connection --------------------------------------------


def _settings(cur) -> dict[str, str]:
    cur.execute(
        "SELECT name, setting FROM pg_settings WHERE name IN "
        "('statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout')"
    )
    return dict(cur.fetchall())


RUNTIME_SETTINGS = {
    "statement_timeout": str(connection.STATEMENT_TIMEOUT_MS),
    "lock_timeout": str(connection.LOCK_TIMEOUT_MS),
    "idle_in_transaction_session_timeout": str(connection.IDLE_IN_TRANSACTION_TIMEOUT_MS),
}


def test_engine_connections_carry_every_bound(db_url):
    engine = db.make_engine(db_url)
    try:
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            with raw.cursor() as cur:
                assert _settings(cur) == RUNTIME_SETTINGS
            params = raw.info.dsn_parameters
        assert params["connect_timeout"] == str(connection.CONNECT_TIMEOUT)
        assert params["tcp_user_timeout"] == str(connection.TCP_USER_TIMEOUT_MS)
        assert params["keepalives"] == "1"
        assert isinstance(raw, connection.BoundedConnection)
    finally:
        engine.dispose()


def test_listener_and_broker_connections_carry_every_bound(db_url):
    conn = Listener(db_url)._connect()
    try:
        with conn.cursor() as cur:
            assert _settings(cur) == RUNTIME_SETTINGS
        assert conn.info.dsn_parameters["tcp_user_timeout"] == str(connection.TCP_USER_TIMEOUT_MS)
    finally:
        conn.close()
    broker = PostgresBroker(db_url)
    try:
        with broker.engine.connect() as c:
            assert c.execute(sa.text("SHOW lock_timeout")).scalar_one() == "2s"
    finally:
        broker.close()


def test_migrations_get_longer_statement_and_lock_timeouts(db_url):
    conn = migrations._connect(db_url)
    try:
        with conn.cursor() as cur:
            found = _settings(cur)
    finally:
        conn.close()
    assert found["statement_timeout"] == str(connection.MIGRATION_STATEMENT_TIMEOUT_MS)
    assert found["lock_timeout"] == str(connection.MIGRATION_LOCK_TIMEOUT_MS)


def test_a_long_statement_is_cancelled_by_the_server(engine):
    with pytest.raises(DatabaseUnavailable, match="statement timeout"), db.transaction(engine) as c:
        c.execute(sa.text("SELECT pg_sleep(30)"))
    db.ping(engine)  # the connection (or its replacement) works


# -- a locked table: 503 and a clear error, not a wait for the lock holder --------------------


@pytest.mark.timeout(HANG, method="thread")
@pytest.mark.parametrize(
    ("table", "mode"),
    [
        ("nexus_queue", "ACCESS EXCLUSIVE"),
        ("nexus_queue", "SHARE"),
        ("broker_messages", "ACCESS EXCLUSIVE"),
        ("broker_messages", "SHARE"),
    ],
)
def test_locked_table_gives_503_and_a_failed_send(db_url, engine, table, mode):
    app = make_app(db_url)
    client = app.test_client()
    broker = PostgresBroker(db_url)
    try:
        assert post(client, "warm").status_code == 202
        with locked(engine, table, mode):
            resp = post(client, "during-lock")
            assert resp.status_code == 503 and resp.headers["Retry-After"]
            assert resp.get_json()["error"]
            if table == "broker_messages":
                with pytest.raises(DatabaseUnavailable, match="lock timeout"):
                    broker.enqueue(message(broker))
            if mode == "ACCESS EXCLUSIVE":
                assert client.get("/api/nexus/stats").status_code == 503
        # Nothing half-written: the refused POST left no row and no message.
        with engine.connect() as conn:
            sessions = conn.execute(sa.text("SELECT session_id FROM nexus_queue")).scalars()
            assert list(sessions) == ["warm"]
            assert conn.execute(sa.text("SELECT count(*) FROM broker_messages")).scalar() == 1
        assert post(client, "after-lock").status_code == 202
        broker.enqueue(message(broker))
    finally:
        broker.close()
        app.extensions["nexus_engine"].dispose()


# -- a hung server (SIGSTOP): 503 and a failed send, then recovery on SIGCONT -----------------


@pytest.mark.fault
@pytest.mark.timeout(HANG * 2, method="thread")
def test_hung_server_gives_503_and_a_failed_send_then_recovers(private_server):
    app = make_app(private_server.url)
    client = app.test_client()
    broker = PostgresBroker(private_server.url)
    dramatiq.set_broker(broker)
    try:
        # Warm pools: the hang must be noticed on connections that exist (the pre-ping).
        assert post(client, "before").status_code == 202
        assert client.get(URL).status_code == 200
        broker.enqueue(message(broker))
        with stopped(private_server):
            resp = post(client, "during")
            assert resp.status_code == 503 and resp.headers["Retry-After"]
            health = client.get(URL)
            assert health.status_code == 503 and health.get_json()["status"] == "unhealthy"
            with pytest.raises(DatabaseUnavailable):
                broker.enqueue(message(broker))
            with pytest.raises(DatabaseUnavailable):
                db.ping(db.make_engine(private_server.url))  # a new connection too
        wait_for(lambda: post(client, "after").status_code == 202, what="recovery")
        assert client.get(URL).status_code == 200
        broker.enqueue(message(broker))
        engine = db.make_engine(private_server.url)
        with engine.connect() as conn:
            sessions = conn.execute(sa.text("SELECT session_id FROM nexus_queue ORDER BY 1"))
            assert list(sessions.scalars()) == ["after", "before"]
        engine.dispose()
    finally:
        broker.close()
        app.extensions["nexus_engine"].dispose()
