"""Fixtures shared by the whole suite.

The suite talks to a real PostgreSQL: ``DATABASE_URL`` if set, else an embedded server held by
the pytest process.  A template database is migrated once per session and cloned per test
(``CREATE DATABASE ... TEMPLATE``), so every test starts from the real, fresh schema.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest

from nexus import config, db, migrations
from nexus.embedded import DATA_ROOT, EmbeddedServer

#: The server URL given to the suite, read before any test clears the environment.
SERVER_URL = os.environ.get("DATABASE_URL", "").strip() or None
#: The embedded test server trades durability for speed; fault tests start their own server.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No project variable from the developer's shell reaches a test."""
    for name in config.VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of the PostgreSQL server the suite uses (its maintenance database)."""
    if SERVER_URL:
        yield SERVER_URL
        return
    # A folder per session: two suites running at once never stop each other's server.
    data_dir = DATA_ROOT / f"test-{os.getpid()}"
    try:
        with EmbeddedServer(data_dir, settings=FAST_SETTINGS) as server:
            yield server.url
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    """Name of a database migrated to the current schema, cloned by :func:`db_url`."""
    name = f"nexus_template_{uuid.uuid4().hex[:12]}"
    db.execute_autocommit(server_url, f'CREATE DATABASE "{name}"')
    try:
        migrations.upgrade(db.with_database(server_url, name))
        yield name
    finally:
        db.execute_autocommit(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fresh_database(server_url: str, template: str) -> Iterator[str]:
    name = f"nexus_test_{uuid.uuid4().hex[:12]}"
    db.execute_autocommit(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield db.with_database(server_url, name)
    finally:
        db.execute_autocommit(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(server_url: str, template_db: str) -> Iterator[str]:
    """URL of a fresh, fully migrated database of this test's own."""
    yield from _fresh_database(server_url, template_db)


@pytest.fixture
def empty_db_url(server_url: str) -> Iterator[str]:
    """URL of a fresh database with no schema at all (for migration tests)."""
    yield from _fresh_database(server_url, "template0")


@pytest.fixture
def engine(db_url: str):
    eng = db.make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def private_server(tmp_path) -> Iterator[EmbeddedServer]:
    """A PostgreSQL server of this test's own, migrated, that the test may stop, restart or
    kill (``.stop()``, ``.start()``, ``.kill()``); its ``url`` stays the same across restarts."""
    server = EmbeddedServer(tmp_path / "pg")
    try:
        server.start()
        migrations.upgrade(server.url)
        yield server
    finally:
        server.close()
