"""Migrations: applied in order, recorded, idempotent, safe concurrently, atomic per file."""

import threading

import psycopg2
import pytest

from nexus import migrations
from nexus.errors import DatabaseUnavailable, MigrationError


def tables(url):
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def test_upgrade_applies_everything_then_nothing(empty_db_url):
    first = migrations.upgrade(empty_db_url)
    assert [m.version for m in first] == [m.version for m in migrations.available()]
    assert {"nexus_queue", "prospect_data", "nexus_schema_migrations"} <= set(tables(empty_db_url))

    assert migrations.upgrade(empty_db_url) == []
    applied, pending = migrations.status(empty_db_url)
    assert pending == [] and len(applied) == len(first)


def test_two_concurrent_upgrades_apply_each_file_once(empty_db_url):
    results, errors = [], []

    def run():
        try:
            results.append(migrations.upgrade(empty_db_url))
        except Exception as exc:  # pragma: no cover - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    total = sorted(len(r) for r in results)
    assert total == [0, len(migrations.available())]


def test_status_before_anything_lists_all_pending(empty_db_url):
    applied, pending = migrations.status(empty_db_url)
    assert applied == [] and len(pending) == len(migrations.available())


def test_malformed_migration_names_the_file_and_changes_nothing(empty_db_url, tmp_path):
    (tmp_path / "0001_good.sql").write_text("CREATE TABLE public.good (id int);")
    (tmp_path / "0002_bad.sql").write_text(
        "CREATE TABLE public.half_done (id int);\nTHIS IS NOT SQL;"
    )
    with pytest.raises(MigrationError, match="0002_bad.sql"):
        migrations.upgrade(empty_db_url, tmp_path)
    names = tables(empty_db_url)
    assert "good" in names and "half_done" not in names
    applied, pending = migrations.status(empty_db_url, tmp_path)
    assert [m.version for m in applied] == ["0001"]
    assert [m.version for m in pending] == ["0002"]


def test_unreachable_server_is_a_clear_error(tmp_path):
    url = f"postgresql://postgres@/postgres?host={tmp_path}"
    with pytest.raises(DatabaseUnavailable, match="cannot connect"):
        migrations.upgrade(url)
