"""The admin surface (/metrics, /admin) through the Flask test client, against a real database:
enabled only with NEXUS_ADMIN_TOKEN, authentication, CSRF, escaping, the numbers it shows, and
the tally behind them."""

from __future__ import annotations

import re
import threading

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from nexus import config, db, metrics
from nexus.admin import chart
from nexus.web import create_app

TOKEN = "admin-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
SAMPLE = [{"role": "user", "content": "Hola, me llamo Juan Pérez, quiero empezar"}]
REQUIRED_METRICS = (
    "nexus_queue_rows",
    "nexus_queue_oldest_pending_seconds",
    "nexus_broker_messages",
    "nexus_extraction_seconds",
    "nexus_extraction_failures_total",
    "nexus_llm_tokens_total",
    "nexus_http_requests_total",
)


def make_app(db_url, **env):
    return create_app({"SETTINGS": config.load(env), "DATABASE_URL": db_url, "TESTING": True})


_owners: dict[str, sa.Engine] = {}


def owner_engine(app) -> sa.Engine:
    """An engine with the login user's own privileges, to set up rows and dead letters (the
    app's own engine runs as nexus_web: functions only)."""
    url = app.config["DATABASE_URL"]
    if url not in _owners:
        _owners[url] = db.make_engine(url)
    return _owners[url]


@pytest.fixture(autouse=True)
def _dispose_owner_engines():
    yield
    while _owners:
        _owners.popitem()[1].dispose()


@pytest.fixture
def app(db_url):
    app = make_app(db_url, NEXUS_ADMIN_TOKEN=TOKEN)
    yield app
    app.extensions["nexus_engine"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


def sql(engine, statement: str, **params):
    with engine.begin() as conn:
        result = conn.execute(sa.text(statement), params)
        return result.all() if result.returns_rows else []


def enqueue(engine, session: str, fingerprint: str | None = None) -> str:
    return db.enqueue(engine, SAMPLE, session, fingerprint, {}).queue_id


def fail(engine, queue_id: str, reason: str) -> None:
    statement = "SELECT update_queue_status(CAST(:id AS uuid), 'failed', :r)"
    sql(engine, statement, id=queue_id, r=reason)


def true_counts(engine) -> dict[str, int]:
    counts = dict.fromkeys(("pending", "processing", "completed", "failed"), 0)
    counts.update(dict(sql(engine, "SELECT status, count(*) FROM nexus_queue GROUP BY status")))
    return counts


def sample(text: str, name: str, **labels) -> float | None:
    """The value of one series in a text exposition (None when absent), read by the library's
    own parser."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def login(client) -> str:
    """Log in through the form; returns the session's CSRF token (read from the page)."""
    resp = client.post("/admin/login", data={"token": TOKEN})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/admin")
    page = client.get("/admin").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


# -- enabled only with a token ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/metrics", "/admin", "/admin/login", "/admin/static/admin.css"])
def test_without_a_token_the_admin_paths_are_json_404(db_url, path):
    app = make_app(db_url)
    resp = app.test_client().get(path, headers=BEARER)
    assert resp.status_code == 404 and resp.is_json and resp.get_json()["error"]
    assert app.test_client().post("/admin/retry", headers=BEARER).status_code == 404
    app.extensions["nexus_engine"].dispose()


def test_a_short_admin_token_is_a_config_error():
    with pytest.raises(config.ConfigError, match="NEXUS_ADMIN_TOKEN"):
        config.load({"NEXUS_ADMIN_TOKEN": "short"})
    assert config.load({"NEXUS_ADMIN_TOKEN": f"  {TOKEN} "}).admin_token == TOKEN
    assert TOKEN not in repr(config.load({"NEXUS_ADMIN_TOKEN": TOKEN}))


def test_a_missing_metrics_directory_is_a_config_error(tmp_path):
    with pytest.raises(config.ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        config.load({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "nope")})
    assert config.load({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}).metrics_dir == str(tmp_path)


# -- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"}],
)
def test_metrics_and_admin_need_the_token(client, headers):
    for path in ("/metrics", "/admin/retry"):
        method = client.get if path == "/metrics" else client.post
        resp = method(path, headers=headers)
        assert resp.status_code == 401 and resp.is_json
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    # A browser without a session is sent to the form; a wrong Bearer is refused outright.
    resp = client.get("/admin", headers=headers)
    assert resp.status_code == (302 if not headers else 401)


def test_bearer_token_opens_everything(client):
    resp = client.get("/metrics", headers=BEARER)
    assert resp.status_code == 200
    assert resp.content_type.startswith("text/plain") and "version=" in resp.content_type
    assert client.get("/admin", headers=BEARER).status_code == 200


def test_login_form_sets_a_strict_httponly_session(client):
    resp = client.get("/admin")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/admin/login")
    assert client.get("/admin/login").status_code == 200

    wrong = client.post("/admin/login", data={"token": "not-the-token-at-all"})
    assert wrong.status_code == 401 and "Wrong token" in wrong.get_data(as_text=True)
    assert client.get("/admin").status_code == 302

    resp = client.post("/admin/login", data={"token": TOKEN})
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = client.get("/admin")
    assert page.status_code == 200 and "Rows by status" in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert client.get("/metrics").status_code == 200


def test_the_session_cookie_is_secure_over_https(app):
    client = app.test_client()
    resp = client.post("/admin/login", data={"token": TOKEN}, base_url="https://admin.example")
    assert "Secure" in resp.headers["Set-Cookie"]
    plain = app.test_client().post("/admin/login", data={"token": TOKEN})
    assert "Secure" not in plain.headers["Set-Cookie"]


def test_a_session_made_with_another_token_is_refused(db_url, client):
    login(client)
    other = make_app(db_url, NEXUS_ADMIN_TOKEN="another-token-0123456789")
    other_client = other.test_client()
    other_client.set_cookie("nexus_admin", client.get_cookie("nexus_admin").value)
    assert other_client.get("/admin").status_code == 302
    other.extensions["nexus_engine"].dispose()


def test_logout_ends_the_session(client):
    csrf = login(client)
    assert client.post("/admin/logout", data={"csrf_token": csrf}).status_code == 303
    assert client.get("/admin").status_code == 302


# -- actions and CSRF -------------------------------------------------------------------------


def test_retry_without_the_csrf_token_is_refused_and_writes_nothing(app, client):
    engine = owner_engine(app)
    queue_id = enqueue(engine, "s-1")
    fail(engine, queue_id, "boom")
    csrf = login(client)
    for data in ({"id": queue_id}, {"id": queue_id, "csrf_token": csrf + "x"}):
        assert client.post("/admin/retry", data=data).status_code == 403
    assert sql(engine, "SELECT status, version FROM nexus_queue")[0] == ("failed", 1)


def test_retry_button_reopens_the_row_as_a_new_version(app, client):
    engine = owner_engine(app)
    queue_id = enqueue(engine, "s-1")
    fail(engine, queue_id, "boom")
    csrf = login(client)
    assert "Retry</button>" in client.get("/admin").get_data(as_text=True)

    resp = client.post("/admin/retry", data={"id": queue_id, "csrf_token": csrf})
    assert resp.status_code == 303
    page = client.get("/admin").get_data(as_text=True)
    assert "Retried 1 row." in page and "No failed rows." in page
    assert sql(engine, "SELECT status, version FROM nexus_queue")[0] == ("pending", 2)
    dispatched = "SELECT count(*) FROM broker_messages WHERE args = jsonb_build_array(:id, 2)"
    assert sql(engine, dispatched, id=queue_id)[0][0] == 1


def test_bad_or_unknown_ids_are_clear_errors_that_write_nothing(app, client):
    engine = owner_engine(app)
    queue_id = enqueue(engine, "s-1")  # pending, not failed: retrying it is refused
    resp = client.post("/admin/retry", data={"id": "not-a-uuid"}, headers=BEARER)
    assert resp.status_code == 400 and "not an id" in resp.get_json()["error"]
    assert client.post("/admin/retry", headers=BEARER).status_code == 400
    assert client.post("/admin/retry", data={"id": queue_id}, headers=BEARER).status_code == 404
    missing = "00000000-0000-0000-0000-000000000000"
    assert client.post("/admin/requeue", data={"id": missing}, headers=BEARER).status_code == 404
    assert sql(engine, "SELECT status, version FROM nexus_queue")[0] == ("pending", 1)

    csrf = login(client)
    resp = client.post("/admin/retry", data={"id": "nope", "csrf_token": csrf})
    assert resp.status_code == 303
    assert "not an id" in client.get("/admin").get_data(as_text=True)


def test_requeue_button_gives_a_dead_letter_back(app, client):
    engine = owner_engine(app)
    queue_id = enqueue(engine, "s-1")
    # Given the row's message dead-lettered (as the broker does after the last attempt).
    sql(
        engine,
        """WITH dead AS (DELETE FROM broker_messages RETURNING *)
           INSERT INTO broker_dead_letters (message_id, queue_name, actor_name, args, kwargs,
               options, message_timestamp, enqueued_at, attempts, retries, error)
           SELECT message_id, queue_name, actor_name, args, kwargs, options,
                  message_timestamp, enqueued_at, 6, 5, 'Poison <b>bold</b>' FROM dead""",
    )
    fail(engine, queue_id, "gave up")
    csrf = login(client)
    page = client.get("/admin").get_data(as_text=True)
    assert "Requeue</button>" in page and "Poison &lt;b&gt;bold&lt;/b&gt;" in page
    message_id = sql(engine, "SELECT message_id::text FROM broker_dead_letters")[0][0]

    resp = client.post("/admin/requeue", data={"id": message_id, "csrf_token": csrf})
    assert resp.status_code == 303
    assert "Requeued 1 dead letter." in client.get("/admin").get_data(as_text=True)
    assert sql(engine, "SELECT count(*) FROM broker_dead_letters")[0][0] == 0
    assert sql(engine, "SELECT message_id::text, state FROM broker_messages")[0] == (
        message_id,
        "ready",
    )


# -- what it shows ----------------------------------------------------------------------------


def test_conversation_text_is_escaped_everywhere(app, client):
    engine = owner_engine(app)
    evil = "<script>alert(1)</script>"
    queue_id = enqueue(engine, f"session {evil}", fingerprint=f"fp {evil}")
    fail(engine, queue_id, f"error {evil}")
    sql(
        engine,
        "INSERT INTO prospect_data (fingerprint_id, nombre, email, momento_optimo) "
        "VALUES ('fp-x', :evil, :evil, 'caliente')",
        evil=f"name {evil}",
    )
    page = client.get("/admin", headers=BEARER).get_data(as_text=True)
    assert "<script" not in page
    for text in ("session ", "fp ", "error ", "name "):
        assert f"{text}&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_metrics_show_the_database_and_the_requests(app, client):
    engine = owner_engine(app)
    ids = [enqueue(engine, f"s-{i}") for i in range(5)]
    fail(engine, ids[0], "boom")
    sql(engine, "SELECT update_queue_status(CAST(:id AS uuid), 'completed')", id=ids[1])
    before = sample(
        client.get("/metrics", headers=BEARER).get_data(as_text=True),
        "nexus_http_requests_total",
        endpoint="/metrics",
        status="200",
    )

    text = client.get("/metrics", headers=BEARER).get_data(as_text=True)
    for name in REQUIRED_METRICS:
        assert f"# TYPE {name} " in text, name
    for status, n in true_counts(engine).items():
        assert sample(text, "nexus_queue_rows", status=status) == n
    assert sample(text, "nexus_broker_messages", queue="nexus", state="ready") == 5
    assert sample(text, "nexus_broker_messages", queue="nexus", state="dead") == 0
    assert sample(text, "nexus_queue_oldest_pending_seconds") > 0
    assert sample(text, "nexus_database_up") == 1
    assert sample(text, "nexus_metrics_multiprocess") == 0  # the suite counts in memory
    after = sample(text, "nexus_http_requests_total", endpoint="/metrics", status="200")
    assert after == (before or 0) + 1


def test_metrics_without_a_database_still_answer_with_the_process_metrics():
    # Nothing listens on port 1: every connection is refused at once.
    app = make_app("postgresql://nexus@127.0.0.1:1/nexus", NEXUS_ADMIN_TOKEN=TOKEN)
    resp = app.test_client().get("/metrics", headers=BEARER)
    assert resp.status_code == 200
    text = resp.get_data(as_text=True)
    assert sample(text, "nexus_database_up") == 0
    assert sample(text, "nexus_queue_rows", status="pending") is None
    assert "# TYPE nexus_http_requests_total counter" in text
    app.extensions["nexus_engine"].dispose()


def test_extraction_metrics_are_recorded_by_kind_and_reason():
    metrics.extraction_done("rules", 0.002)
    metrics.extraction_done(
        "claude", 1.5, [{"model": "m-1", "input_tokens": 10, "cache_read_input_tokens": 3}]
    )
    # A failed attempt: its reason counted, and the tokens of the calls it made.
    metrics.extraction_failed(RuntimeError("quote: <script>"))
    metrics.count_calls([{"model": "m-1", "input_tokens": 7, "output_tokens": 2}])
    text = metrics.generate_latest(metrics.REGISTRY).decode()
    assert sample(text, "nexus_extraction_seconds_count", extractor="rules") >= 1
    assert sample(text, "nexus_llm_tokens_total", model="m-1", kind="input") >= 17
    assert sample(text, "nexus_llm_tokens_total", model="m-1", kind="cache_read") >= 3
    assert sample(text, "nexus_extraction_failures_total", reason="RuntimeError") >= 1
    assert "<script>" not in text


def test_dashboard_counts_chart_and_percentiles(app, client):
    engine = owner_engine(app)
    ids = [enqueue(engine, f"s-{i}") for i in range(4)]
    for queue_id in ids[:2]:
        sql(engine, "SELECT update_queue_status(CAST(:id AS uuid), 'completed')", id=queue_id)
    fail(engine, ids[2], "boom")
    overview = db.admin_overview(engine, 60)
    assert overview["status_counts"] == true_counts(engine)
    now = overview["minutes"][-1]
    assert (now["accepted"], now["completed"], now["failed"]) == (4, 2, 1)
    assert len(overview["minutes"]) == 60
    assert overview["processing"]["completed"] == 2 and overview["processing"]["p50_s"] >= 0

    page = client.get("/admin", headers=BEARER).get_data(as_text=True)
    for status, n in true_counts(engine).items():
        assert f'data-status="{status}"><span class="n">{n}</span>' in page
    assert '<polyline class="s-completed"' in page and "completed 2" in page


def test_chart_scales_to_the_busiest_minute():
    minutes = [
        {"minute": None, "accepted": a, "completed": c, "failed": f}
        for a, c, f in [(0, 0, 0), (4, 2, 1), (8, 8, 0)]
    ]
    drawn = chart(minutes)
    assert drawn["top"] == 8
    (accepted_series,) = [s for s in drawn["series"] if s["name"] == "accepted"]
    accepted = accepted_series["points"].split()
    assert len(accepted) == 3
    ys = [float(p.split(",")[1]) for p in accepted]
    assert ys[0] == drawn["base_y"] and ys[2] == drawn["top_y"] and ys[0] > ys[1] > ys[2]


# -- the tally behind the counts --------------------------------------------------------------


def test_tally_matches_a_full_count_through_every_kind_of_change(engine):
    ids = [enqueue(engine, f"s-{i}") for i in range(30)]
    status_of = "SELECT update_queue_status(CAST(:id AS uuid), :s)"
    for i, queue_id in enumerate(ids):
        sql(engine, status_of, id=queue_id, s=("completed", "failed", "processing")[i % 3])
    db.enqueue(engine, SAMPLE + SAMPLE, "s-0", None, {})  # a changed resend: a new version
    sql(engine, "UPDATE nexus_queue SET status = 'pending' WHERE session_id IN ('s-1', 's-2')")
    sql(engine, "DELETE FROM nexus_queue WHERE session_id IN ('s-3', 's-4', 's-5')")
    counts = dict(sql(engine, "SELECT status, count FROM nexus_admin_status_counts()"))
    assert counts == true_counts(engine)
    # Folded (the call above folded the deltas) and unfolded deltas sum alike.
    assert sql(engine, "SELECT count(*) FROM nexus_queue_tally_delta")[0][0] == 0
    enqueue(engine, "s-new")
    sql(engine, "INSERT INTO nexus_queue (messages, session_id) VALUES ('[]', 's-raw')")
    assert dict(sql(engine, "SELECT * FROM nexus_admin_status_counts()")) == true_counts(engine)

    sql(engine, "TRUNCATE nexus_queue CASCADE")
    assert set(dict(sql(engine, "SELECT * FROM nexus_admin_status_counts()")).values()) == {0}


@pytest.mark.slow
def test_tally_stays_exact_with_writers_and_folders_at_once(db_url):
    """Writers change statuses while readers fold concurrently: every delta is folded exactly
    once (none lost, none twice)."""
    engine = db.make_engine(db_url, pool_size=8, max_overflow=0)
    ids = [enqueue(engine, f"s-{i}") for i in range(40)]
    errors: list[BaseException] = []
    writing = threading.Event()
    writing.set()

    def write(chunk):
        try:
            for queue_id in chunk:
                for status in ("processing", "completed", "failed", "pending"):
                    sql(engine, "UPDATE nexus_queue SET status = :s WHERE id = CAST(:id AS uuid)",
                        s=status, id=queue_id)  # fmt: skip
        except BaseException as exc:  # noqa: BLE001  (reported by the main thread)
            errors.append(exc)

    def fold():
        try:
            while writing.is_set():
                sql(engine, "SELECT * FROM nexus_admin_status_counts()")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(ids[i::4],)) for i in range(4)]
    folders = [threading.Thread(target=fold) for _ in range(3)]
    for t in writers + folders:
        t.start()
    for t in writers:
        t.join()
    writing.clear()
    for t in folders:
        t.join()
    assert errors == []
    assert dict(sql(engine, "SELECT * FROM nexus_admin_status_counts()")) == true_counts(engine)
    assert true_counts(engine)["pending"] == 40
    engine.dispose()


def test_the_worker_role_keeps_the_tally_and_folds_it(engine):
    queue_id = enqueue(engine, "s-1")
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL ROLE nexus_worker"))
        conn.execute(
            sa.text("UPDATE nexus_queue SET status = 'processing' WHERE id = CAST(:id AS uuid)"),
            {"id": queue_id},
        )
    assert sql(engine, "SELECT count(*) FROM nexus_queue_tally_delta")[0][0] == 3
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL ROLE nexus_worker"))
        conn.execute(db.q("fold_queue_tally"))
    assert sql(engine, "SELECT count(*) FROM nexus_queue_tally_delta")[0][0] == 0
    db.fold_queue_tally(engine)
    assert dict(sql(engine, "SELECT * FROM nexus_admin_status_counts()")) == true_counts(engine)


def test_web_role_reads_through_functions_only(engine):
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL ROLE nexus_web"))
        conn.execute(sa.text("SELECT * FROM nexus_admin_status_counts()")).all()
        conn.execute(sa.text("SELECT * FROM nexus_admin_minutes(60)")).all()
        conn.execute(sa.text("SELECT * FROM nexus_admin_processing_times(3600)")).all()
    for table in ("nexus_queue_tally", "nexus_queue_tally_delta"):
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            with engine.begin() as conn:
                conn.execute(sa.text("SET LOCAL ROLE nexus_web"))
                conn.execute(sa.text(f"SELECT * FROM {table}")).all()
    with pytest.raises(sa.exc.DataError, match="p_minutes"):
        sql(engine, "SELECT * FROM nexus_admin_minutes(0)")
