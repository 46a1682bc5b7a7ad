"""Least privilege, Supabase included (migration 0006 and the post-step of every upgrade).

The Supabase tests build a database whose default privileges grant everything in schema
public to ``anon`` and ``authenticated`` -- as Supabase's do -- *before* migrating, then check
that neither role can call any nexus function or touch any nexus table.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import psycopg2
import pytest
import sqlalchemy as sa

from nexus import config, db, migrations
from nexus.web import WEB_ROLE, create_app

API_ROLES = ("anon", "authenticated")
#: Every nexus table the migrations on this branch create (later branches add more; the
#: checks below also enumerate whatever exists).
TABLES = (
    "nexus_queue",
    "prospect_data",
    "broker_workers",
    "broker_messages",
    "broker_dead_letters",
    "nexus_clock_slots",
    "nexus_schema_migrations",
)
#: A call of each function the API roles must not reach (arguments valid enough that only
#: the privilege check can stop it).
CALLS = {
    "update_prospect_data": "SELECT public.update_prospect_data('fp', '{\"nombre\": \"x\"}')",
    "cleanup_old_nexus_queue": "SELECT public.cleanup_old_nexus_queue()",
    "cleanup_old_nexus_queue(limit)": "SELECT public.cleanup_old_nexus_queue(10)",
    "broker_enqueue": ("SELECT public.broker_enqueue('default', 'x', '[]', '{}', '{}', 0)"),
    "broker_reap": "SELECT public.broker_reap(1000)",
    "enqueue_nexus_message": (
        'SELECT public.enqueue_nexus_message(\'[{"role": "user", "content": "hi"}]\', \'s\')'
    ),
    "nexus_enqueue": (
        'SELECT * FROM public.nexus_enqueue(\'[{"role": "user", "content": "hi"}]\', \'s\')'
    ),
    "update_queue_status": "SELECT public.update_queue_status(gen_random_uuid(), 'failed')",
    "nexus_stats": "SELECT public.nexus_stats()",
    "nexus_health": "SELECT public.nexus_health()",
    "nexus_harden_privileges": "SELECT public.nexus_harden_privileges()",
}
NEXUS_TABLES_SQL = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND public.nexus_is_nexus_object(c.relname)
 ORDER BY 1"""
NEXUS_FUNCTIONS_SQL = """
SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'public' AND public.nexus_is_nexus_object(p.proname) ORDER BY 1"""


def run(url: str, statement: str) -> list[tuple]:
    conn = psycopg2.connect(db.libpq_url(url))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def create_api_roles(url: str) -> None:
    """Supabase's API roles (cluster-wide: made only if missing, like the migrations do)."""
    for role in API_ROLES:
        run(
            url,
            f"DO $$ BEGIN CREATE ROLE {role} NOLOGIN; "
            "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
        )


@pytest.fixture
def supabase_db(empty_db_url: str) -> Iterator[str]:
    """A database with Supabase's default privileges, set before migrating, then migrated."""
    create_api_roles(empty_db_url)
    for kind in ("TABLES", "FUNCTIONS", "SEQUENCES"):
        run(
            empty_db_url,
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON {kind} TO anon, authenticated",
        )
    # Supabase's public schema is usable by the API roles.
    run(empty_db_url, "GRANT USAGE, CREATE ON SCHEMA public TO anon, authenticated")
    yield empty_db_url


class _Allowed(Exception):
    """Rolls back the savepoint of a statement that was allowed (and its SET LOCAL ROLE)."""


def denied_as(conn: sa.Connection, role: str, statement: str) -> bool:
    """True when ``statement`` run as ``role`` fails with "permission denied"; whatever the
    outcome, nothing it did (the role switch included) outlives the call."""
    try:
        with conn.begin_nested():
            conn.execute(sa.text(f"SET LOCAL ROLE {role}"))
            conn.execute(sa.text(statement))
            raise _Allowed
    except sa.exc.ProgrammingError as exc:
        return "permission denied" in str(exc.orig)
    except _Allowed:
        return False


def test_supabase_api_roles_can_touch_nothing(supabase_db):
    migrations.upgrade(supabase_db)
    engine = db.make_engine(supabase_db)
    try:
        with engine.connect() as conn:
            tables = conn.execute(sa.text(NEXUS_TABLES_SQL)).scalars().all()
            functions = conn.execute(sa.text(NEXUS_FUNCTIONS_SQL)).scalars().all()
            assert set(TABLES) <= set(tables)
            for role in API_ROLES:
                for name, call in CALLS.items():
                    assert denied_as(conn, role, call), f"{role} may call {name}"
                for table in tables:
                    assert denied_as(conn, role, f"SELECT * FROM public.{table}"), (role, table)
                    assert denied_as(conn, role, f"INSERT INTO public.{table} DEFAULT VALUES"), (
                        role,
                        table,
                    )
                # And by the catalogue: no privilege at all on any nexus object.
                for table in tables:
                    assert not conn.execute(
                        sa.text(
                            "SELECT has_table_privilege(:r, :t, 'SELECT, INSERT, UPDATE, DELETE, "
                            "TRUNCATE, REFERENCES, TRIGGER')"
                        ),
                        {"r": role, "t": f"public.{table}"},
                    ).scalar_one(), (role, table)
                for fn in functions:
                    assert not conn.execute(
                        sa.text("SELECT has_function_privilege(:r, :f, 'EXECUTE')"),
                        {"r": role, "f": fn},
                    ).scalar_one(), (role, fn)
                # Every sequence of the schema (identity sequences included: llm_calls_id_seq).
                for seq in conn.execute(
                    sa.text(
                        "SELECT c.relname FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'S'"
                    )
                ).scalars():
                    assert not conn.execute(
                        sa.text("SELECT has_sequence_privilege(:r, :s, 'USAGE, SELECT, UPDATE')"),
                        {"r": role, "s": f"public.{seq}"},
                    ).scalar_one(), (role, seq)
            conn.rollback()
    finally:
        engine.dispose()


def test_objects_of_later_migrations_are_hardened_too(supabase_db, tmp_path):
    """A later migration that forgets its revokes still commits nothing open to the API."""
    for migration in migrations.available():
        shutil.copy(migration.path, tmp_path / migration.path.name)
    (tmp_path / "0999_later.sql").write_text(
        "CREATE TABLE public.nexus_later (id bigserial PRIMARY KEY, note text);\n"
        "CREATE FUNCTION public.nexus_later_fn() RETURNS integer LANGUAGE sql AS 'SELECT 1';\n"
        "CREATE TABLE public.users_own_table (id int);\n"
    )
    migrations.upgrade(supabase_db, tmp_path)
    engine = db.make_engine(supabase_db)
    try:
        with engine.connect() as conn:
            for role in API_ROLES:
                assert denied_as(conn, role, "SELECT * FROM public.nexus_later")
                assert denied_as(conn, role, "SELECT nextval('public.nexus_later_id_seq')")
                assert denied_as(conn, role, "SELECT public.nexus_later_fn()")
                # A table that is not nexus's keeps what the database's defaults gave it.
                assert not denied_as(conn, role, "SELECT * FROM public.users_own_table")
            rls = conn.execute(
                sa.text("SELECT relrowsecurity FROM pg_class WHERE relname = 'nexus_later'")
            ).scalar_one()
            policies = (
                conn.execute(
                    sa.text(
                        "SELECT polname FROM pg_policy "
                        "WHERE polrelid = 'public.nexus_later'::regclass"
                    )
                )
                .scalars()
                .all()
            )
            assert rls and policies == ["nexus_worker_all"]
            conn.rollback()
    finally:
        engine.dispose()


def test_a_grant_made_after_migrating_is_revoked_by_the_next_upgrade(supabase_db):
    migrations.upgrade(supabase_db)
    run(supabase_db, "GRANT ALL ON public.prospect_data TO anon")
    assert migrations.upgrade(supabase_db) == []  # nothing pending, the post-step still runs
    assert not run(
        supabase_db, "SELECT has_table_privilege('anon', 'public.prospect_data', 'SELECT')"
    )[0][0]


def test_every_table_has_row_level_security_and_a_worker_policy(engine):
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT c.relname, c.relrowsecurity, count(p.oid) AS policies "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "LEFT JOIN pg_policy p ON p.polrelid = c.oid "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') "
                "GROUP BY c.relname, c.relrowsecurity"
            )
        ).all()
    assert {r.relname for r in rows} >= set(TABLES)
    assert [r.relname for r in rows if not r.relrowsecurity or not r.policies] == []


def test_worker_role_still_reads_and_writes_broker_tables(engine):
    with engine.connect() as conn:
        conn.execute(sa.text("SET ROLE nexus_worker"))
        conn.execute(sa.text("SELECT public.broker_enqueue('default', 'x', '[]', '{}', '{}', 0)"))
        assert conn.execute(sa.text("SELECT count(*) FROM broker_messages")).scalar_one() == 1
        conn.execute(sa.text("INSERT INTO nexus_clock_slots (job, slot) VALUES ('j', now())"))
        assert (
            conn.execute(sa.text("SELECT public.nexus_stats()")).scalar_one()["broker"]["ready"]
            == 1
        )
        conn.rollback()


def test_web_role_gets_functions_and_no_table(engine):
    with engine.connect() as conn:
        conn.execute(sa.text(f"SET ROLE {WEB_ROLE}"))
        queue_id = conn.execute(
            sa.text("SELECT public.enqueue_nexus_message(CAST(:m AS jsonb), 'web', 'fp')"),
            {"m": json.dumps([{"role": "user", "content": "hola"}])},
        ).scalar_one()
        assert queue_id
        assert conn.execute(sa.text("SELECT public.nexus_health()")).scalar_one()
        stats = conn.execute(sa.text("SELECT public.nexus_stats()")).scalar_one()
        assert stats["by_status"]["pending"]["count"] == 1 and stats["broker"]["backlog"] == 1
        conn.rollback()
        for sql in [
            *(f"SELECT * FROM public.{t}" for t in TABLES),
            "INSERT INTO nexus_queue (messages, session_id) VALUES ('[]', 'x')",
            "SELECT public.update_prospect_data('fp', '{}')",
            "SELECT public.update_queue_status(gen_random_uuid(), 'failed')",
            "SELECT public.cleanup_old_nexus_queue()",
            "SELECT public.broker_enqueue('default', 'x', '[]', '{}', '{}', 0)",
        ]:
            assert denied_as(conn, WEB_ROLE, sql), sql
        conn.rollback()


def test_web_process_runs_as_nexus_web_even_with_a_superuser_url(db_url):
    app = create_app({"SETTINGS": config.load({}), "DATABASE_URL": db_url, "TESTING": True})
    engine = app.extensions["nexus_engine"]
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_user")).scalar_one() == WEB_ROLE
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.execute(sa.text("SELECT * FROM prospect_data"))
            conn.rollback()
        client = app.test_client()
        body = {"messages": [{"role": "user", "content": "hola"}], "sessionId": "w"}
        resp = client.post("/api/nexus/producer", json=body)
        assert resp.status_code == 202
        assert client.get("/api/nexus/producer").status_code == 200
        assert client.get("/api/nexus/stats").get_json()["statuses"]["pending"]["count"] == 1
    finally:
        engine.dispose()


def test_a_login_user_in_role_nexus_web_gets_the_same(db_url):
    """What the README tells operators to do: CREATE USER ... IN ROLE nexus_web."""
    user = "nexus_test_web_app"
    run(db_url, f"DROP ROLE IF EXISTS {user}")
    run(db_url, f"CREATE USER {user} IN ROLE {WEB_ROLE}")
    try:
        url = sa.engine.make_url(db_url).set(username=user).render_as_string(hide_password=False)
        app = create_app({"SETTINGS": config.load({}), "DATABASE_URL": url, "TESTING": True})
        engine = app.extensions["nexus_engine"]
        client = app.test_client()
        body = {"messages": [{"role": "user", "content": "hola"}], "sessionId": "u"}
        assert client.post("/api/nexus/producer", json=body).status_code == 202
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_user")).scalar_one() == WEB_ROLE
        engine.dispose()
    finally:
        run(db_url, f"DROP OWNED BY {user}")
        run(db_url, f"DROP ROLE {user}")


def test_health_on_a_database_not_migrated_is_503_not_500(empty_db_url):
    app = create_app({"SETTINGS": config.load({}), "DATABASE_URL": empty_db_url, "TESTING": True})
    try:
        resp = app.test_client().get("/api/nexus/producer")
        assert resp.status_code == 503 and resp.get_json()["status"] == "unhealthy"
    finally:
        app.extensions["nexus_engine"].dispose()
