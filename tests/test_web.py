"""The HTTP producer through the Flask test client, against a real database."""

import io
import json
import threading
import time

import pytest
import sqlalchemy as sa

from nexus import config, db
from nexus.web import MAX_BODY_BYTES, create_app

SAMPLE = [
    {"role": "user", "content": "Hola, me llamo Juan Pérez"},
    {"role": "assistant", "content": "Hola Juan, ¿en qué puedo ayudarte?"},
    {"role": "user", "content": "Quiero saber sobre las oportunidades de inversión"},
]
URL = "/api/nexus/producer"


def make_app(db_url, **env):
    return create_app({"SETTINGS": config.load(env), "DATABASE_URL": db_url, "TESTING": True})


_readers: dict[str, sa.Engine] = {}


def reader(app) -> sa.Engine:
    """An engine with the login user's own privileges, to check what the app wrote (the
    app's own engine runs as nexus_web, which may read no table)."""
    url = app.config["DATABASE_URL"]
    if url not in _readers:
        _readers[url] = db.make_engine(url)
    return _readers[url]


@pytest.fixture(autouse=True)
def _dispose_readers():
    yield
    while _readers:
        _readers.popitem()[1].dispose()


@pytest.fixture
def app(db_url):
    app = make_app(db_url)
    yield app
    app.extensions["nexus_engine"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


def count_rows(app, table="nexus_queue"):
    with reader(app).connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def post(client, body, **kw):
    return client.post(URL, data=json.dumps(body), content_type="application/json", **kw)


def test_accepts_a_conversation(client, app):
    resp = post(
        client,
        {"messages": SAMPLE, "sessionId": "s-1", "fingerprint": "fp-1", "metadata": {"a": 1}},
        headers={"Referer": "https://shop.example/p", "User-Agent": "widget/1"},
    )
    assert resp.status_code == 202
    body = resp.get_json()
    assert body["status"] == "accepted" and body["duplicate"] is False
    assert body["estimatedProcessingTime"] == "<2 seconds"
    assert resp.headers["X-Queue-Id"] == body["queueId"]
    assert resp.headers["X-Message-Id"] == body["messageId"]
    with reader(app).connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM nexus_queue")).one()
    assert str(row.id) == body["queueId"] and row.messages == SAMPLE
    assert (row.session_id, row.fingerprint, row.status) == ("s-1", "fp-1", "pending")
    md = row.metadata
    assert md["a"] == 1 and md["url"] == "https://shop.example/p" and md["userAgent"] == "widget/1"
    assert md["producerVersion"] and md["enqueuedAt"]


def test_metadata_url_and_agent_win_over_headers(client, app):
    post(
        client,
        {"messages": SAMPLE, "sessionId": "s", "metadata": {"url": "u", "userAgent": "ua"}},
        headers={"Referer": "r", "User-Agent": "h"},
    )
    with reader(app).connect() as conn:
        md = conn.execute(sa.text("SELECT metadata FROM nexus_queue")).scalar_one()
    assert (md["url"], md["userAgent"]) == ("u", "ua")


def test_identical_resend_is_a_duplicate(client, app):
    body = {"messages": SAMPLE, "sessionId": "s-dup", "fingerprint": "fp"}
    first = post(client, body).get_json()
    again = post(client, body)
    assert again.status_code == 202
    assert again.get_json()["duplicate"] is True
    assert again.get_json()["queueId"] == first["queueId"]
    assert count_rows(app) == 1


def test_longer_conversation_is_new_work_and_prefix_is_not(client, app):
    first = post(client, {"messages": SAMPLE[:2], "sessionId": "s-grow"}).get_json()
    longer = post(client, {"messages": SAMPLE, "sessionId": "s-grow"}).get_json()
    late = post(client, {"messages": SAMPLE[:1], "sessionId": "s-grow"}).get_json()
    assert longer["queueId"] == first["queueId"] and longer["duplicate"] is False
    assert longer["messageId"] != first["messageId"]
    assert late["duplicate"] is True and late["messageId"] == longer["messageId"]


BAD_BODIES = [
    ("not json", b"{nope", 400),
    ("not utf-8", b'{"messages": "\xff\xfe"}', 400),
    ("array body", b"[]", 400),
    ("no messages", json.dumps({"sessionId": "s"}).encode(), 400),
    ("empty messages", json.dumps({"messages": [], "sessionId": "s"}).encode(), 400),
    ("too many", json.dumps({"messages": SAMPLE * 3400, "sessionId": "s"}).encode(), 400),
    (
        "bad role",
        json.dumps({"messages": [{"role": "x", "content": "c"}], "sessionId": "s"}).encode(),
        400,
    ),
    (
        "content not str",
        json.dumps({"messages": [{"role": "user", "content": 5}], "sessionId": "s"}).encode(),
        400,
    ),
    ("message not object", json.dumps({"messages": ["hi"], "sessionId": "s"}).encode(), 400),
    ("no session", json.dumps({"messages": SAMPLE}).encode(), 400),
    ("session not str", json.dumps({"messages": SAMPLE, "sessionId": 7}).encode(), 400),
    ("session too long", json.dumps({"messages": SAMPLE, "sessionId": "x" * 129}).encode(), 400),
    ("session unprintable", json.dumps({"messages": SAMPLE, "sessionId": "a\nb"}).encode(), 400),
    (
        "fingerprint too long",
        json.dumps({"messages": SAMPLE, "sessionId": "s", "fingerprint": "f" * 129}).encode(),
        400,
    ),
    (
        "metadata not object",
        json.dumps({"messages": SAMPLE, "sessionId": "s", "metadata": [1]}).encode(),
        400,
    ),
    (
        "metadata too big",
        json.dumps({"messages": SAMPLE, "sessionId": "s", "metadata": {"x": "y" * 17000}}).encode(),
        400,
    ),
    (
        "deep metadata",
        b'{"messages": [{"role": "user", "content": "c"}], "sessionId": "s", "metadata": '
        + b'{"a":' * 40
        + b"1"
        + b"}" * 41,
        400,
    ),
    ("very deep", b"[" * 100000 + b"]" * 100000, 400),
    (
        "NaN",
        b'{"messages": [{"role": "user", "content": "c"}], "sessionId": "s",'
        b' "metadata": {"x": NaN}}',
        400,
    ),
    (
        "1e999",
        b'{"messages": [{"role": "user", "content": "c"}], "sessionId": "s",'
        b' "metadata": {"x": -1e999}}',
        400,
    ),
    (
        "NUL in content",
        json.dumps(
            {"messages": [{"role": "user", "content": "a\u0000b"}], "sessionId": "s"}
        ).encode(),
        400,
    ),
    (
        "lone surrogate",
        b'{"messages": [{"role": "user", "content": "\\ud800"}], "sessionId": "s"}',
        400,
    ),
    (
        "2 MiB",
        json.dumps(
            {"messages": [{"role": "user", "content": "x" * (2 << 20)}], "sessionId": "s"}
        ).encode(),
        413,
    ),
]


@pytest.mark.parametrize("name, raw, status", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_input_gets_a_json_4xx_and_writes_nothing(client, app, name, raw, status):
    resp = client.post(URL, data=raw, content_type="application/json")
    assert resp.status_code == status
    body = resp.get_json()
    assert isinstance(body["error"], str) and "details" in body
    assert count_rows(app) == 0


#: What gunicorn sets for a chunked body: the server terminates the stream, no Content-Length.
CHUNKED = {"wsgi.input_terminated": True}


@pytest.mark.parametrize("size, status", [(MAX_BODY_BYTES + 1, 413), (3 << 20, 413)])
def test_chunked_body_over_the_limit_is_413(client, app, size, status):
    body = json.dumps({"messages": SAMPLE, "sessionId": "chunked"}).encode()
    body += b" " * (size - len(body))  # valid JSON, padded with whitespace

    resp = client.post(
        URL,
        input_stream=io.BytesIO(body),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides=CHUNKED,
    )
    assert resp.status_code == status and resp.get_json()["error"]
    assert count_rows(app) == 0


def test_chunked_body_at_the_limit_is_accepted(client, app):
    body = json.dumps({"messages": SAMPLE, "sessionId": "at-limit"}).encode()
    body += b" " * (MAX_BODY_BYTES - len(body))
    resp = client.post(
        URL,
        input_stream=io.BytesIO(body),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides=CHUNKED,
    )
    assert resp.status_code == 202


def test_sql_in_strings_is_just_text(client, app):
    evil = "'); DROP TABLE nexus_queue; --"
    resp = post(client, {"messages": [{"role": "user", "content": evil}], "sessionId": evil})
    assert resp.status_code == 202
    with reader(app).connect() as conn:
        assert conn.execute(sa.text("SELECT session_id FROM nexus_queue")).scalar_one() == evil


def test_non_json_content_type_is_415(client, app):
    resp = client.post(URL, data="messages=1", content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 415 and resp.get_json()["error"]
    assert count_rows(app) == 0


def test_every_error_is_json(client):
    assert client.get("/nope").status_code == 404
    assert client.get("/nope").get_json()["error"]
    resp = client.put(URL)
    assert resp.status_code == 405 and resp.get_json()["error"]
    assert "POST" in resp.headers["Allow"]


def test_health_enqueues_nothing(client, app):
    resp = client.get(URL)
    body = resp.get_json()
    assert resp.status_code == 200
    assert body["status"] == "healthy" and body["connectionTestPassed"] is True
    assert body["transport"] == "postgres-dramatiq" and body["version"] and body["timestamp"]
    assert count_rows(app) == 0


def test_stats_shape(client):
    post(client, {"messages": SAMPLE, "sessionId": "st"})
    body = client.get("/api/nexus/stats").get_json()
    assert body["statuses"]["pending"]["count"] == 1
    assert body["statuses"]["completed"] == {"count": 0, "avg_processing_time_sec": None}
    assert body["oldestPendingAgeSec"] >= 0
    assert body["broker"]["ready"] == 1 and body["broker"]["backlog"] == 1
    assert body["deadLetters"] == body["broker"]["dead_letters"] == 0


def test_cors_only_for_allowed_origins(db_url):
    app = make_app(db_url, NEXUS_ALLOWED_ORIGINS="https://widget.example")
    client = app.test_client()
    ok = client.options(
        URL,
        headers={"Origin": "https://widget.example", "Access-Control-Request-Method": "POST"},
    )
    assert ok.headers.get("Access-Control-Allow-Origin") == "https://widget.example"
    other = client.get(URL, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    app.extensions["nexus_engine"].dispose()


def test_concurrent_identical_posts_make_one_row(app):
    body = {"messages": SAMPLE, "sessionId": "race", "fingerprint": "fp"}
    results = []
    barrier = threading.Barrier(50)

    def send():
        client = app.test_client()
        barrier.wait()
        results.append(post(client, body))

    threads = [threading.Thread(target=send) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [202] * 50
    assert len({r.get_json()["queueId"] for r in results}) == 1
    assert sum(not r.get_json()["duplicate"] for r in results) == 1
    assert count_rows(app) == 1
    assert count_rows(app, "broker_messages") == 1, "one row, one message, one extraction"


@pytest.mark.fault
def test_database_down_gives_503_quickly_then_recovers(private_server):
    app = make_app(private_server.url)
    client = app.test_client()
    assert post(client, {"messages": SAMPLE, "sessionId": "a"}).status_code == 202
    private_server.stop()
    try:
        started = time.monotonic()
        resp = post(client, {"messages": SAMPLE, "sessionId": "b"})
        assert resp.status_code == 503 and resp.headers["Retry-After"]
        assert resp.get_json()["error"]
        health = client.get(URL)
        assert health.status_code == 503 and health.get_json()["status"] == "unhealthy"
        elapsed = time.monotonic() - started
        assert elapsed < 15, f"503 took {elapsed:.1f}s"
    finally:
        private_server.start()
    assert post(client, {"messages": SAMPLE, "sessionId": "b"}).status_code == 202
    assert count_rows(app) == 2
    app.extensions["nexus_engine"].dispose()
