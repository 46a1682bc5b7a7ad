"""The merge ledger and the per-session merge (``nexus_merge_version``), from plain SQL."""

import json
import shutil
import uuid

import psycopg2
import pytest
import sqlalchemy as sa

from nexus import db, migrations

S1, S2, S3 = (str(uuid.uuid4()) for _ in range(3))


def data(**fields) -> dict:
    """An extraction result as the worker passes it (``Prospect.to_dict()``)."""
    base = {
        "nombre": None,
        "email": None,
        "telefono": None,
        "ocupacion": None,
        "nivel_interes": 0.0,
        "objeciones": [],
        "arquetipo": None,
        "momento_optimo": "frio",
        "rechazo": False,
    }
    return {**base, **fields}


def merge(conn, session, version, fp="fp", **fields):
    return conn.execute(
        sa.text("SELECT nexus_merge_version(CAST(:q AS uuid), :v, :fp, CAST(:d AS jsonb))"),
        {"q": session, "v": version, "fp": fp, "d": json.dumps(data(**fields))},
    ).scalar_one()


def prospect(conn, fp="fp"):
    return conn.execute(
        sa.text("SELECT * FROM prospect_data WHERE fingerprint_id = :fp"), {"fp": fp}
    ).one()


def ledger_count(conn, fp="fp") -> int:
    return conn.execute(
        sa.text("SELECT count(*) FROM prospect_merges WHERE fingerprint_id = :fp"), {"fp": fp}
    ).scalar_one()


def test_an_objection_the_latest_version_no_longer_finds_disappears(engine):
    with engine.begin() as conn:
        merge(conn, S1, 1, objeciones=["precio", "tiempo"])
        assert prospect(conn).objeciones == ["precio", "tiempo"]
        merge(conn, S1, 2, objeciones=["tiempo"])
        assert prospect(conn).objeciones == ["tiempo"]


def test_objections_are_the_union_of_each_sessions_latest(engine):
    with engine.begin() as conn:
        merge(conn, S1, 1, objeciones=["mlm"])
        merge(conn, S2, 1, objeciones=["confianza", "precio"])
        merge(conn, S1, 2, objeciones=[])
        assert prospect(conn).objeciones == ["precio", "confianza"]


def test_a_greeting_only_later_session_leaves_a_hot_lead_hot(engine):
    with engine.begin() as conn:
        merge(conn, S1, 1, nombre="Ana Ruiz", telefono="+573001234567", nivel_interes=8)
        merge(conn, S2, 1, nivel_interes=0)  # "hola"
        p = prospect(conn)
    assert float(p.nivel_interes) == 8 and p.momento_optimo == "caliente"
    assert (p.nombre, p.telefono) == ("Ana Ruiz", "+573001234567")


def test_an_explicit_rejection_in_a_later_session_lowers_the_lead(engine):
    with engine.begin() as conn:
        merge(conn, S1, 1, nombre="Ana", nivel_interes=8)
        merge(conn, S2, 1, nivel_interes=0)
        merge(conn, S3, 1, nivel_interes=0, rechazo=True)  # "no me interesa"
        p = prospect(conn)
    assert float(p.nivel_interes) == 0 and p.momento_optimo == "frio"
    assert p.nombre == "Ana", "a rejection does not erase who the visitor is"


def test_interest_after_a_rejection_can_rise_again(engine):
    with engine.begin() as conn:
        merge(conn, S1, 1, nivel_interes=0, rechazo=True)
        merge(conn, S2, 1, nivel_interes=5)
        assert float(prospect(conn).nivel_interes) == 5


def test_within_a_session_the_latest_version_replaces_interest(engine):
    with engine.begin() as conn:
        merge(conn, S1, 1, nivel_interes=8)
        merge(conn, S1, 2, nivel_interes=4.5)
        p = prospect(conn)
    assert float(p.nivel_interes) == 4.5 and p.momento_optimo == "tibio"


def test_identity_newest_non_null_wins_and_null_keeps(engine):
    with engine.begin() as conn:
        merge(conn, S1, 1, nombre="Ana", email="ana@x.com", ocupacion="chef")
        merge(conn, S2, 1, nombre="Ana María", email=None, arquetipo="lider_hogar")
        merge(conn, S1, 2, nombre=None, email="ana@y.com", ocupacion="chef")
        p = prospect(conn)
    assert (p.nombre, p.email, p.ocupacion, p.arquetipo) == (
        "Ana María",
        "ana@y.com",
        "chef",
        "lider_hogar",
    )


def test_stage_advances_and_never_goes_back(engine):
    with engine.begin() as conn:
        out = merge(conn, S1, 1, nombre="Ana", arquetipo="lider_hogar", nivel_interes=5)
        assert (out["previous_stage"], out["current_stage"], out["advanced"]) == (
            "iniciar",
            "acoger",
            True,
        )
        out = merge(conn, S1, 2, nombre="Ana", telefono="+573001234567", nivel_interes=8)
        assert out["current_stage"] == "activar"
        out = merge(conn, S2, 1, nivel_interes=0, rechazo=True)
        assert out["current_stage"] == "activar" and not out["advanced"]
        assert prospect(conn).etapa == "activar"


def test_a_version_merges_at_most_once(engine):
    with engine.begin() as conn:
        first = merge(conn, S1, 1, nombre="Ana", objeciones=["precio"], nivel_interes=4)
        before = prospect(conn)
    with engine.begin() as conn:
        # A second delivery that got past every other fence, with a different answer.
        again = merge(conn, S1, 1, nombre="Otra", objeciones=["mlm"], nivel_interes=9)
        after = prospect(conn)
        assert ledger_count(conn) == 1
    assert first["merged"] is True and again["merged"] is False
    assert after == before


def test_the_unique_constraint_itself_holds(engine):
    with engine.begin() as conn:
        merge(conn, S1, 1, nombre="Ana")
    with pytest.raises(sa.exc.IntegrityError) as info, engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO prospect_merges (queue_id, version, fingerprint_id, data)"
                " VALUES (CAST(:q AS uuid), 1, 'fp', '{}'::jsonb)"
            ),
            {"q": S1},
        )
    assert isinstance(info.value.orig, psycopg2.errors.UniqueViolation)


@pytest.mark.parametrize(
    "fields",
    [
        {"objeciones": ["caro"]},
        {"nivel_interes": 11},
        {"nivel_interes": "mucho"},
        {"arquetipo": "pirata"},
    ],
)
def test_bad_data_is_rejected_and_writes_nothing(engine, fields):
    with engine.begin() as conn:
        merge(conn, S1, 1, nombre="Ana", nivel_interes=5)
    with pytest.raises(sa.exc.DBAPIError), engine.begin() as conn:
        merge(conn, S1, 2, **fields)
    with engine.begin() as conn:
        assert ledger_count(conn) == 1
        p = prospect(conn)
    assert float(p.nivel_interes) == 5 and p.objeciones == [] and p.arquetipo is None


@pytest.mark.parametrize(
    "queue_id, fp, payload",
    [(S1, "", "{}"), (S1, None, "{}"), (S1, "fp", "[]"), (None, "fp", "{}")],
)
def test_bad_arguments_are_rejected(engine, queue_id, fp, payload):
    with pytest.raises(sa.exc.DBAPIError, match="must"), engine.begin() as conn:
        conn.execute(
            sa.text("SELECT nexus_merge_version(CAST(:q AS uuid), 1, :fp, CAST(:d AS jsonb))"),
            {"q": queue_id, "fp": fp, "d": payload},
        )


def test_merge_version_helper_returns_the_outcome(engine):
    out = db.merge_version(engine, S1, 1, "fp-h", data(nombre="Ana", nivel_interes=7))
    assert out["merged"] is True and out["success"] is True
    assert db.merge_version(engine, S1, 1, "fp-h", data())["merged"] is False


def test_update_prospect_data_still_works_for_operators(engine):
    with engine.begin() as conn:
        conn.execute(
            sa.text("SELECT update_prospect_data('op', CAST(:d AS jsonb))"),
            {"d": json.dumps({"nombre": "Luz", "objeciones": ["precio"], "nivel_interes": 3})},
        )
        merge(conn, S1, 1, fp="op", email="luz@x.com", nivel_interes=6)
        p = prospect(conn, "op")
    # The operator's name stays (the ledger has none); the pipeline's merge sets the rest.
    assert (p.nombre, p.email, float(p.nivel_interes)) == ("Luz", "luz@x.com", 6)


def test_ledger_is_locked_down(engine):
    with engine.connect() as conn:
        assert conn.execute(
            sa.text("SELECT relrowsecurity FROM pg_class WHERE relname = 'prospect_merges'")
        ).scalar_one()
        public = (
            conn.execute(
                sa.text(
                    "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                    " WHERE n.nspname = 'public'"
                    " AND p.proname IN ('nexus_merge_version', 'nexus_visitor_hash')"
                    " AND has_function_privilege('public', p.oid, 'EXECUTE')"
                )
            )
            .scalars()
            .all()
        )
        assert public == []
        for role in ("nexus_producer", "nexus_web"):
            conn.execute(sa.text(f"SET ROLE {role}"))
            for sql in (
                "SELECT * FROM prospect_merges",
                "SELECT nexus_merge_version(gen_random_uuid(), 1, 'fp', '{}'::jsonb)",
            ):
                with (
                    pytest.raises(sa.exc.ProgrammingError, match="permission denied"),
                    conn.begin_nested(),
                ):
                    conn.execute(sa.text(sql))
            conn.execute(sa.text("RESET ROLE"))
        conn.execute(sa.text("SET ROLE nexus_worker"))
        merge(conn, S1, 1, fp="w", nombre="Ana")
        assert ledger_count(conn, "w") == 1
        conn.rollback()


def test_visitor_hash_ignores_assistant_messages(engine):
    user = {"role": "user", "content": "hola"}
    bot = {"role": "assistant", "content": "¡Hola! ¿En qué te ayudo?"}

    def h(messages):
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT nexus_visitor_hash(CAST(:m AS jsonb))"),
                {"m": json.dumps(messages)},
            ).scalar_one()

    assert h([user]) == h([user, bot]) == h([bot, user, bot])
    assert h([user]) != h([user, user]) != h([user, {"role": "user", "content": "hola."}])


def test_prospects_merged_before_the_ledger_keep_their_history(empty_db_url, tmp_path):
    # Given a database migrated up to just before 0007, with a prospect merged the old way,
    for migration in migrations.available():
        if migration.version < "0007":
            shutil.copy(migration.path, tmp_path / migration.path.name)
    migrations.upgrade(empty_db_url, tmp_path)
    engine = db.make_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("SELECT update_prospect_data('old', CAST(:d AS jsonb))"),
                {"d": json.dumps({"nombre": "Eva", "nivel_interes": 8, "objeciones": ["tiempo"]})},
            )
        # when 0007 is applied and a greeting-only session merges,
        migrations.upgrade(empty_db_url)
        with engine.begin() as conn:
            assert ledger_count(conn, "old") == 1
            merge(conn, S1, 1, fp="old", objeciones=["precio"])
            p = prospect(conn, "old")
    finally:
        engine.dispose()
    # then the old history still counts, as one session of its own.
    assert (p.nombre, float(p.nivel_interes), p.momento_optimo) == ("Eva", 8, "caliente")
    assert p.objeciones == ["precio", "tiempo"]
