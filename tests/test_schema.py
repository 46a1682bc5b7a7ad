"""The seed's SQL objects, called from plain SQL as an operator would."""

import json
import threading

import psycopg2
import pytest
import sqlalchemy as sa

MSGS = [{"role": "user", "content": "test"}]


def call(conn, sql, **params):
    return conn.execute(sa.text(sql), params)


def enqueue(conn, messages, session, fingerprint=None, metadata=None):
    return call(
        conn,
        "SELECT * FROM nexus_enqueue(CAST(:m AS jsonb), :s, :f, CAST(:md AS jsonb))",
        m=json.dumps(messages),
        s=session,
        f=fingerprint,
        md=json.dumps(metadata or {}),
    ).one()


def row(conn, queue_id):
    return call(conn, "SELECT * FROM nexus_queue WHERE id = :id", id=queue_id).one()


# -- enqueue ----------------------------------------------------------------------------------


def test_seed_call_returns_same_id_twice(engine):
    sql = (
        'SELECT enqueue_nexus_message(\'[{"role":"user","content":"test"}]\'::jsonb,'
        " 'test-session-123', 'test-fingerprint', '{}'::jsonb)"
    )
    with engine.begin() as conn:
        first = call(conn, sql).scalar_one()
    with engine.begin() as conn:
        second = call(conn, sql).scalar_one()
        count = call(conn, "SELECT count(*) FROM nexus_queue").scalar_one()
    assert first == second and count == 1


def test_insert_naming_only_seed_columns_works(engine):
    with engine.begin() as conn:
        call(
            conn,
            "INSERT INTO nexus_queue (messages, session_id, fingerprint) "
            "VALUES ('[]'::jsonb, 's-plain', 'fp')",
        )
        r = call(conn, "SELECT * FROM nexus_queue WHERE session_id = 's-plain'").one()
    assert r.status == "pending" and r.version == 1 and r.retry_count == 0
    assert r.metadata == {} and r.created_at is not None


def test_identical_resend_is_duplicate_and_changes_nothing(engine):
    with engine.begin() as conn:
        first = enqueue(conn, MSGS, "s1", "fp")
        call(conn, "UPDATE nexus_queue SET status = 'completed' WHERE id = :id", id=first.queue_id)
        again = enqueue(conn, MSGS, "s1", "fp")
        r = row(conn, first.queue_id)
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.queue_id == first.queue_id and again.queue_version == 1
    assert r.status == "completed" and r.version == 1


def test_changed_conversation_reopens_the_row_as_a_new_version(engine):
    longer = MSGS + [{"role": "assistant", "content": "hola"}]
    with engine.begin() as conn:
        first = enqueue(conn, MSGS, "s2", "fp")
        call(
            conn,
            "UPDATE nexus_queue SET status = 'failed', retry_count = 3, error_message = 'x',"
            " processed_at = now() WHERE id = :id",
            id=first.queue_id,
        )
        changed = enqueue(conn, longer, "s2", "fp", {"k": 1})
        r = row(conn, first.queue_id)
    assert changed.queue_id == first.queue_id and not changed.duplicate
    assert changed.queue_version == 2 and r.version == 2
    assert r.status == "pending" and r.retry_count == 0
    assert r.error_message is None and r.processed_at is None
    assert r.messages == longer and r.metadata == {"k": 1}


def test_strict_prefix_resend_is_a_late_duplicate(engine):
    longer = MSGS + [{"role": "assistant", "content": "hola"}]
    with engine.begin() as conn:
        first = enqueue(conn, longer, "s3", "fp")
        late = enqueue(conn, MSGS, "s3", "fp")
        r = row(conn, first.queue_id)
    assert late.duplicate and late.queue_id == first.queue_id and late.queue_version == 1
    assert r.messages == longer


def test_resend_without_fingerprint_keeps_the_stored_one(engine):
    longer = MSGS + [{"role": "assistant", "content": "hola"}]
    with engine.begin() as conn:
        first = enqueue(conn, MSGS, "s6", "fp-a")
        same = enqueue(conn, MSGS, "s6", None)
        grown = enqueue(conn, longer, "s6", None)
        r = row(conn, first.queue_id)
    assert same.duplicate and same.queue_version == 1
    assert not grown.duplicate and grown.queue_version == 2
    assert r.fingerprint == "fp-a"


def test_late_prefix_with_a_fingerprint_does_not_replace(engine):
    longer = MSGS + [{"role": "assistant", "content": "hola"}]
    with engine.begin() as conn:
        first = enqueue(conn, longer, "s7", None)
        late = enqueue(conn, MSGS, "s7", "fp-late")
        r = row(conn, first.queue_id)
    assert late.duplicate and late.queue_version == 1
    assert r.messages == longer and r.fingerprint is None


def test_changed_fingerprint_is_a_change(engine):
    with engine.begin() as conn:
        enqueue(conn, MSGS, "s4", "fp-a")
        changed = enqueue(conn, MSGS, "s4", "fp-b")
    assert not changed.duplicate and changed.queue_version == 2


@pytest.mark.parametrize(
    "messages, session",
    [([], "s"), ({"role": "user"}, "s"), (MSGS, ""), (MSGS, None), (None, "s")],
)
def test_enqueue_rejects_bad_arguments(engine, messages, session):
    with pytest.raises(sa.exc.DataError), engine.begin() as conn:
        enqueue(conn, messages, session)
    with engine.begin() as conn:
        assert call(conn, "SELECT count(*) FROM nexus_queue").scalar_one() == 0


def test_concurrent_identical_enqueues_make_one_row(db_url):
    ids, errors = [], []
    barrier = threading.Barrier(8)

    def worker():
        conn = psycopg2.connect(db_url)
        try:
            barrier.wait()
            with conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT enqueue_nexus_message(%s::jsonb, 'race', 'fp')", (json.dumps(MSGS),)
                )
                ids.append(cur.fetchone()[0])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(ids)) == 1
    conn = psycopg2.connect(db_url)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*), max(version) FROM nexus_queue")
        assert cur.fetchone() == (1, 1)
    conn.close()


# -- update_queue_status ------------------------------------------------------------------


def test_update_queue_status(engine):
    with engine.begin() as conn:
        e = enqueue(conn, MSGS, "s5", "fp")
        assert call(
            conn, "SELECT update_queue_status(:id, 'failed', 'boom')", id=e.queue_id
        ).scalar_one()
        r = row(conn, e.queue_id)
        assert (r.status, r.error_message) == ("failed", "boom") and r.processed_at is not None
        # Back to pending re-opens the row as a new version (so it is dispatched again).
        call(conn, "SELECT update_queue_status(:id, 'pending')", id=e.queue_id)
        r = row(conn, e.queue_id)
        assert (r.status, r.version, r.retry_count) == ("pending", 2, 0)
        missing = "00000000-0000-0000-0000-000000000000"
        assert not call(
            conn, "SELECT update_queue_status(:id, 'completed')", id=missing
        ).scalar_one()
    with pytest.raises(sa.exc.DataError), engine.begin() as conn:
        call(conn, "SELECT update_queue_status(:id, 'bogus')", id=e.queue_id)


# -- update_prospect_data -----------------------------------------------------------------


def merge(conn, fp, **data):
    return call(
        conn, "SELECT update_prospect_data(:fp, CAST(:d AS jsonb))", fp=fp, d=json.dumps(data)
    ).scalar_one()


def prospect(conn, fp):
    return call(conn, "SELECT * FROM prospect_data WHERE fingerprint_id = :fp", fp=fp).one()


def test_merge_new_values_win_and_null_keeps_old(engine):
    with engine.begin() as conn:
        merge(conn, "v1", nombre="Ana", email="ana@x.com", nivel_interes=3, telefono=None)
        merge(conn, "v1", nombre=None, email="ana@y.com", nivel_interes=2.5, ocupacion="chef")
        p = prospect(conn, "v1")
    assert (p.nombre, p.email, p.ocupacion) == ("Ana", "ana@y.com", "chef")
    assert float(p.nivel_interes) == 2.5 and p.telefono is None


def test_merge_unions_objections(engine):
    with engine.begin() as conn:
        merge(conn, "v2", objeciones=["precio", "tiempo"])
        merge(conn, "v2", objeciones=["tiempo", "mlm"])
        merge(conn, "v2", objeciones=[])
        assert prospect(conn, "v2").objeciones == ["precio", "tiempo", "mlm"]


def test_stage_iniciar_to_acoger_to_activar(engine):
    with engine.begin() as conn:
        out = merge(conn, "v3", nombre="Ana", nivel_interes=5)
        assert out == {
            "success": True,
            "previous_stage": "iniciar",
            "current_stage": "iniciar",
            "advanced": False,
        }
        out = merge(conn, "v3", arquetipo="lider_hogar")
        assert (out["previous_stage"], out["current_stage"], out["advanced"]) == (
            "iniciar",
            "acoger",
            True,
        )
        out = merge(conn, "v3", telefono="+573001234567", nivel_interes=7)
        assert (out["previous_stage"], out["current_stage"]) == ("acoger", "activar")


def test_stage_iniciar_to_activar_directly(engine):
    with engine.begin() as conn:
        out = merge(
            conn,
            "v4",
            nombre="Ana",
            arquetipo="joven_ambicion",
            telefono="123456789",
            nivel_interes=8,
        )
    assert (out["previous_stage"], out["current_stage"], out["advanced"]) == (
        "iniciar",
        "activar",
        True,
    )


def test_phone_and_interest_without_name_do_not_skip_acoger(engine):
    with engine.begin() as conn:
        out = merge(conn, "v5", telefono="123456789", nivel_interes=9)
    assert out["current_stage"] == "iniciar"


def test_stage_never_goes_back(engine):
    with engine.begin() as conn:
        merge(conn, "v6", nombre="A", arquetipo="lider_hogar", nivel_interes=6)
        out = merge(conn, "v6", nivel_interes=1)
        assert out["current_stage"] == "acoger" and not out["advanced"]
        assert prospect(conn, "v6").etapa == "acoger"


@pytest.mark.parametrize(
    "data",
    [
        {"nivel_interes": 11},
        {"nivel_interes": 4.3},
        {"arquetipo": "hacker"},
        {"objeciones": ["otra"]},
        {"momento_optimo": "ya"},
    ],
)
def test_merge_rejects_out_of_schema_values(engine, data):
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        merge(conn, "bad", **data)


def test_merge_rejects_empty_fingerprint(engine):
    with pytest.raises(sa.exc.DataError), engine.begin() as conn:
        merge(conn, "", nombre="x")


# -- cleanup ----------------------------------------------------------------------------------


def seed_rows(conn, n, status, created_age, processed_age, prefix):
    call(
        conn,
        "INSERT INTO nexus_queue (messages, session_id, status, created_at, processed_at) "
        "SELECT '[]'::jsonb, :p || g, :st, now() - CAST(:ca AS interval), "
        "now() - CAST(:pa AS interval) FROM generate_series(1, :n) g",
        p=prefix,
        st=status,
        ca=created_age,
        pa=processed_age,
        n=n,
    )


def test_cleanup_deletes_both_kinds_and_counts_them(engine):
    with engine.begin() as conn:
        seed_rows(conn, 3, "completed", "10 days", "8 days", "old-done-")
        seed_rows(conn, 2, "completed", "10 days", "6 days", "recent-done-")
        seed_rows(conn, 4, "failed", "31 days", "1 day", "old-failed-")
        seed_rows(conn, 1, "failed", "29 days", "29 days", "recent-failed-")
        seed_rows(conn, 1, "pending", "90 days", "90 days", "old-pending-")
        assert call(conn, "SELECT cleanup_old_nexus_queue()").scalar_one() == 7
        left = call(conn, "SELECT session_id FROM nexus_queue ORDER BY 1").scalars().all()
    assert left == ["old-pending-1", "recent-done-1", "recent-done-2", "recent-failed-1"]


def test_cleanup_in_batches_of_many_rows(engine):
    from nexus import db

    with engine.begin() as conn:
        seed_rows(conn, 2500, "completed", "10 days", "8 days", "bulk-")
        assert call(conn, "SELECT cleanup_old_nexus_queue(1000)").scalar_one() == 1000
    assert db.cleanup_old_rows(engine, batch_size=700) == 1500
    with engine.begin() as conn:
        assert call(conn, "SELECT count(*) FROM nexus_queue").scalar_one() == 0


# -- security ---------------------------------------------------------------------------------


def test_producer_role_can_only_enqueue(engine):
    with engine.connect() as conn:
        conn.execute(sa.text("SET ROLE nexus_producer"))
        queue_id = call(
            conn,
            "SELECT enqueue_nexus_message(CAST(:m AS jsonb), 'sec', 'fp')",
            m=json.dumps(MSGS),
        ).scalar_one()
        assert queue_id is not None
        for sql in (
            "SELECT * FROM nexus_queue",
            "SELECT * FROM prospect_data",
            "SELECT update_prospect_data('fp', '{}'::jsonb)",
            "SELECT cleanup_old_nexus_queue()",
            "SELECT update_queue_status(gen_random_uuid(), 'failed')",
        ):
            with (
                pytest.raises(sa.exc.ProgrammingError, match="permission denied"),
                conn.begin_nested(),
            ):
                conn.execute(sa.text(sql))
        conn.rollback()


def test_public_cannot_execute_functions(engine):
    with engine.connect() as conn:
        rows = call(
            conn,
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public' AND p.proname IN ('enqueue_nexus_message', "
            "'update_queue_status', 'update_prospect_data', 'cleanup_old_nexus_queue') "
            "AND has_function_privilege('public', p.oid, 'EXECUTE')",
        ).all()
        rls = (
            call(
                conn,
                "SELECT relname FROM pg_class WHERE relname IN ('nexus_queue', 'prospect_data') "
                "AND relrowsecurity",
            )
            .scalars()
            .all()
        )
        definer_unpinned = (
            call(
                conn,
                "SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = 'public' AND prosecdef AND NOT EXISTS ("
                " SELECT 1 FROM unnest(coalesce(proconfig, '{}')) c WHERE c LIKE 'search_path=%')",
            )
            .scalars()
            .all()
        )
    assert rows == []
    assert sorted(rls) == ["nexus_queue", "prospect_data"]
    assert definer_unpinned == []


def test_worker_role_can_read_and_write(engine):
    with engine.connect() as conn:
        conn.execute(sa.text("SET ROLE nexus_worker"))
        e = enqueue(conn, MSGS, "wk", "fp")
        assert row(conn, e.queue_id).status == "pending"
        merge(conn, "fp", nombre="Ana")
        assert prospect(conn, "fp").nombre == "Ana"
        conn.rollback()
