"""The provisional merge (sql/migrations/0011): what the offline rules found in a deferred
version reaches prospect_data at once, without a ledger row, until an extraction supersedes it."""

import sqlalchemy as sa

from nexus import db
from tests.test_merge_ledger import data, ledger_count, merge, prospect

GREETING = [{"role": "user", "content": "hola, me llamo Ana"}]
PHONE = GREETING + [
    {"role": "assistant", "content": "¿Me dejas tu número?"},
    {"role": "user", "content": "mi número es +57 300 123 4567"},
]
#: A debounce nothing waits for.
WINDOW_MS = 600_000


def signals(nombre=None, email=None, telefono=None) -> dict:
    return {
        "nombre": nombre,
        "email": email,
        "telefono": telefono,
        "intent": False,
        "rechazo": False,
    }


def defer(engine, queue_id, version, provisional=True, **found):
    delay = db.defer_version(engine, queue_id, version, WINDOW_MS, signals(**found), provisional)
    assert delay is not None and delay > 0
    return delay


def test_a_deferred_phone_reaches_the_prospect_without_a_ledger_row(engine):
    row = db.enqueue(engine, PHONE, "s-phone", "fp", {})
    defer(engine, row.queue_id, row.version, nombre="Ana", telefono="+573001234567")
    with engine.connect() as conn:
        p = prospect(conn)
        assert (p.nombre, p.telefono) == ("Ana", "+573001234567")
        assert ledger_count(conn) == 0, "a provisional merge never creates a ledger row"
        # Interest, objections and momento come only from real extractions.
        assert p.nivel_interes is None and p.momento_optimo is None and p.objeciones == []


def test_without_new_identity_the_defer_leaves_the_prospect_alone(engine):
    row = db.enqueue(engine, PHONE, "s-quiet", "fp", {})
    defer(engine, row.queue_id, row.version, provisional=False, telefono="+573001234567")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM prospect_data")).scalar_one() == 0


def test_the_extraction_of_the_version_supersedes_the_provisional_values(engine):
    row = db.enqueue(engine, PHONE, "s-super", "fp", {})
    defer(engine, row.queue_id, row.version, nombre="Ana", telefono="+573001234567")
    # The extraction reads the chat better than the rules (a corrected last digit).
    extracted = data(nombre="Ana Ruiz", telefono="+573001234568", nivel_interes=5)
    db.merge_version(engine, row.queue_id, row.version, "fp", extracted)
    with engine.connect() as conn:
        p = prospect(conn)
        assert (p.nombre, p.telefono, p.momento_optimo) == ("Ana Ruiz", "+573001234568", "tibio")
        assert ledger_count(conn) == 1
    # A later recompute (another version deferred with the rules' old reading) is newer again.
    newer = db.enqueue(engine, PHONE + [{"role": "user", "content": "ok"}], "s-super", "fp", {})
    defer(engine, newer.queue_id, newer.version, nombre="Ana", telefono="+573001234567")
    with engine.connect() as conn:
        assert prospect(conn).telefono == "+573001234567"
        assert ledger_count(conn) == 1


def test_an_older_versions_extraction_does_not_supersede_newer_signals(engine):
    first = db.enqueue(engine, GREETING, "s-older", "fp", {})
    second = db.enqueue(engine, PHONE, "s-older", "fp", {})
    assert second.version == first.version + 1
    defer(engine, second.queue_id, second.version, nombre="Ana", telefono="+573001234567")
    # v1's extraction (it ran while v2 arrived) is merged after v2's signals were stored.
    db.merge_version(engine, first.queue_id, first.version, "fp", data(nombre="Ana Ruiz"))
    with engine.connect() as conn:
        p = prospect(conn)
    assert (p.nombre, p.telefono) == ("Ana", "+573001234567"), "the session's newest values"


def test_provisional_values_survive_another_sessions_merge_and_completion_drops_them(engine):
    row = db.enqueue(engine, PHONE, "s-open", "fp", {})
    defer(engine, row.queue_id, row.version, telefono="+573001234567")
    with engine.begin() as conn:
        other = str(db.enqueue(engine, GREETING, "s-other", "fp", {}).queue_id)
        merge(conn, other, 1, nombre="Ana", nivel_interes=2)
        p = prospect(conn)
        assert (p.nombre, p.telefono) == ("Ana", "+573001234567")
        # A completed row's signals never count (its extraction is in the ledger, or was
        # erased with it by the retention and must not come back).
        conn.execute(
            sa.text("UPDATE nexus_queue SET status = 'completed' WHERE id = CAST(:id AS uuid)"),
            {"id": row.queue_id},
        )
        conn.execute(sa.text("DELETE FROM prospect_data"))
        merge(conn, other, 2, nombre="Ana", nivel_interes=2)
        assert prospect(conn).telefono is None


def test_forget_visitor_erases_provisional_values_with_the_rows(engine):
    row = db.enqueue(engine, PHONE, "s-forget", "fp", {})
    defer(engine, row.queue_id, row.version, telefono="+573001234567")
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT forget_visitor('fp')")).scalar_one() >= 2
        left = conn.execute(
            sa.text("SELECT count(*) FROM nexus_queue WHERE signals IS NOT NULL")
        ).scalar_one()
        assert (
            left == 0
            and conn.execute(sa.text("SELECT count(*) FROM prospect_data")).scalar_one() == 0
        )


def test_recompute_is_locked_down(engine):
    with engine.connect() as conn:
        public = conn.execute(
            sa.text(
                "SELECT has_function_privilege('public',"
                " 'public.nexus_recompute_prospect(text)', 'EXECUTE')"
            )
        ).scalar_one()
    assert public is False
