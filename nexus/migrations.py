"""Ordered migrations from ``sql/migrations/NNNN_name.sql``.

Each pending file runs in its own transaction and is recorded in ``nexus_schema_migrations``.
A session-level advisory lock makes two concurrent upgrades safe: the second waits, then finds
nothing pending.  A file that fails rolls back alone and stops the upgrade with its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg2

from . import connection
from .db import SQL_DIR, libpq_url
from .errors import DatabaseUnavailable, MigrationError

MIGRATIONS_DIR = SQL_DIR / "migrations"
#: Key of the advisory lock held while migrating (any constant unique to this project).
LOCK_KEY = 0x6E657875  # "nexu"

_RECORD = "INSERT INTO public.nexus_schema_migrations (version, name) VALUES (%s, %s)"
#: The privilege post-step (migration 0006), run inside every migration's transaction once it
#: exists, and at the end of every upgrade: no object a migration creates is ever committed
#: with the grants a database's default privileges gave it (Supabase's anon, PUBLIC).
_HARDEN = """
DO $$ BEGIN
    IF to_regprocedure('public.nexus_harden_privileges()') IS NOT NULL THEN
        PERFORM public.nexus_harden_privileges();
    END IF;
END $$"""
_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS public.nexus_schema_migrations (
    version     text PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()


def available(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        version, _, name = path.stem.partition("_")
        if not version.isdigit():
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        found.append(Migration(version, name, path))
    return found


def _connect(url: str):
    try:
        # Bounded waits, with the longer statement and lock timeouts migrations need.
        conn = connection.connect(libpq_url(url), "nexus-migrate", connection.MIGRATION)
    except psycopg2.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
        raise DatabaseUnavailable(f"cannot connect to the database: {first}") from exc
    conn.autocommit = True
    return conn


def _applied(cur) -> set[str]:
    cur.execute("SELECT version FROM public.nexus_schema_migrations")
    return {row[0] for row in cur.fetchall()}


def status(url: str, directory: Path = MIGRATIONS_DIR) -> tuple[list[Migration], list[Migration]]:
    """(applied, pending) migrations."""
    conn = _connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('public.nexus_schema_migrations') IS NOT NULL")
            done = _applied(cur) if cur.fetchone()[0] else set()
    finally:
        conn.close()
    migrations = available(directory)
    return [m for m in migrations if m.version in done], [
        m for m in migrations if m.version not in done
    ]


def upgrade(url: str, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply every pending migration; return those applied (empty when up to date)."""
    migrations = available(directory)
    conn = _connect(url)
    applied_now = []
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            cur.execute(_VERSION_TABLE)
            done = _applied(cur)
            for migration in migrations:
                if migration.version in done:
                    continue
                try:
                    cur.execute("BEGIN")
                    cur.execute(migration.sql)
                    cur.execute(_HARDEN)
                    cur.execute(_RECORD, (migration.version, migration.name))
                    cur.execute("COMMIT")
                except psycopg2.Error as exc:
                    cur.execute("ROLLBACK")
                    detail = (exc.pgerror or str(exc)).strip().replace("\n", " ")
                    raise MigrationError(f"{migration.path.name}: {detail}") from exc
                applied_now.append(migration)
            cur.execute(_HARDEN)
            cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    except psycopg2.OperationalError as exc:
        raise DatabaseUnavailable(f"lost the database while migrating: {exc}") from exc
    finally:
        conn.close()
    return applied_now
