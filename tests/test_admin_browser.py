"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` package) driven by
playwright against the Procfile's web command (gunicorn, 2 processes, multiprocess metrics)
and a real ``dramatiq workers`` process.  It logs in through the form, checks the counts
against the database, clicks "Retry" on a failed row, sees it complete, and writes a
screenshot to ``bench/results/admin.png``.

It never skips: without the browser it fails, saying how to install it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect, sync_playwright
from prometheus_client.parser import text_string_to_metric_families

from nexus import config
from tests.test_pipeline import LONGER, SAMPLE, Workers, wait_status
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "bench" / "results" / "admin.png"
TOKEN = "browser-test-token-0123456789"
#: Debian's package; playwright is pointed at it (``playwright install`` is never needed).
CHROMIUM = "/usr/bin/chromium"
#: Milliseconds playwright waits for an element or a navigation (a hang, not a speed target).
UI_TIMEOUT_MS = 30_000


def chromium_path() -> str:
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if not path:
        pytest.fail(
            f"Chromium not found ({CHROMIUM}): the browser test needs Debian's chromium "
            "package -- run `sudo apt-get install -y chromium` (see README, Monitoring)"
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, headers: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 202
        return json.loads(resp.read())


def sample(text: str, name: str, **labels) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def procfile_command(kind: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{kind}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {kind} line in the Procfile")


class Web:
    """The Procfile's own web line (gunicorn, 2 processes), run as a Procfile runner does:
    under bash, with PORT set."""

    def __init__(self, env: dict, tmp_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp_path / "web.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["bash", "-c", "exec " + procfile_command("web")],
            env={**env, "PORT": str(self.port)},
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: get(self.url + "/api/nexus/producer")[0] == 200, "gunicorn to answer")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def web_env(db_url: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in config.VARIABLES}
    env.update(
        DATABASE_URL=db_url,
        NEXUS_ADMIN_TOKEN=TOKEN,
        PYTHONPATH=str(ROOT),
        PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        **extra,
    )
    return env


def db_counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT status, count(*) FROM nexus_queue GROUP BY status"))
        found = dict(rows.all())
    return {s: found.get(s, 0) for s in ("pending", "processing", "completed", "failed")}


@pytest.mark.slow
def test_operator_logs_in_sees_the_counts_and_retries_a_failed_row(db_url, engine, tmp_path):
    executable = chromium_path()
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    web = Web(web_env(db_url, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)), tmp_path)
    workers = Workers(db_url, tmp_path)
    try:
        # Given three conversations posted to the web and processed by a real worker.
        sessions = {"hot": LONGER, "plain": SAMPLE, "doomed": SAMPLE[:1]}
        ids = {
            name: post_json(
                web.url + "/api/nexus/producer",
                {"messages": messages, "sessionId": f"browser-{name}", "fingerprint": name},
            )["queueId"]
            for name, messages in sessions.items()
        }
        dramatiq_port = free_port()
        workers.start(
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), dramatiq_prom_port=str(dramatiq_port)
        )
        for queue_id in ids.values():
            wait_status(engine, queue_id, "completed")
        # ... and one of them failed (as an extraction that gave up would leave it).
        with engine.begin() as conn:
            conn.execute(
                sa.text("SELECT update_queue_status(CAST(:id AS uuid), 'failed', :reason)"),
                {"id": ids["doomed"], "reason": "ExtractionError: <script>alert(1)</script>"},
            )

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(UI_TIMEOUT_MS)
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

            # When the operator opens the dashboard, they are sent to the form and log in.
            page.goto(web.url + "/admin")
            expect(page).to_have_url(web.url + "/admin/login")
            page.fill("#token", TOKEN)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Rows by status")).to_be_visible()

            # Then the counts are the database's.
            for status, n in db_counts(engine).items():
                expect(page.locator(f'[data-status="{status}"] .n')).to_have_text(str(n))
            expect(page.locator("#hot-leads")).to_contain_text("Juan Pérez")
            failed_row = page.locator(f'#failed tr[data-id="{ids["doomed"]}"]')
            expect(failed_row).to_contain_text("<script>alert(1)</script>")  # shown as text

            # When they click Retry on the failed row, it is processed again and completes.
            failed_row.get_by_role("button", name="Retry").click()
            expect(page.get_by_role("status")).to_contain_text("Retried 1 row.")
            wait_status(engine, ids["doomed"], "completed", version=2)
            page.reload()
            expect(page.locator("#failed")).to_contain_text("No failed rows.")
            expect(page.locator('[data-status="completed"] .n')).to_have_text("3")
            expect(page.locator("#workers")).to_contain_text("Live workers (1)")
            assert dialogs == []  # no script from a conversation ever ran

            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            browser.close()
        assert SCREENSHOT.stat().st_size > 10_000

        # And /metrics (Bearer) aggregates both gunicorn processes and the worker's metrics.
        status, text = get(web.url + "/metrics", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
        assert sample(text, "nexus_queue_rows", status="completed") == 3
        assert sample(text, "nexus_extraction_seconds_count", extractor="rules") == 4
        posts = sample(
            text, "nexus_http_requests_total", endpoint="/api/nexus/producer", status="202"
        )
        assert posts == 3
        assert sample(text, "nexus_http_requests_total", endpoint="/admin", status="200") >= 2
        processed = {"queue_name": "nexus", "actor_name": "process_nexus_message"}
        assert sample(text, "dramatiq_messages_total", **processed) == 4

        # And the worker's own exposition server (Dramatiq's middleware) shows the same.
        def worker_metrics():
            status, text = get(f"http://127.0.0.1:{dramatiq_port}/metrics")
            return text if status == 200 else None

        text = wait_for(worker_metrics, "the worker's exposition server")
        assert sample(text, "dramatiq_messages_total", **processed) == 4
        assert sample(text, "nexus_extraction_seconds_count", extractor="rules") == 4
    finally:
        workers.stop()
        web.stop()


@pytest.mark.slow
def test_gunicorn_processes_count_into_one_place_without_a_configured_directory(db_url, tmp_path):
    """The Procfile's web line alone (no PROMETHEUS_MULTIPROC_DIR): its gunicorn config makes
    a directory for the two processes, so /metrics shows their sum, whichever answers."""
    web = Web(web_env(db_url), tmp_path)
    scrape = {"Authorization": f"Bearer {TOKEN}"}
    health = {"endpoint": "/api/nexus/producer", "status": "200"}

    def served() -> float:
        status, text = get(web.url + "/metrics", scrape)
        assert status == 200, text
        assert sample(text, "nexus_metrics_multiprocess") == 1
        value = sample(text, "nexus_http_requests_total", **health)
        assert value is not None, text
        return value

    try:
        before = served()
        # Concurrent clients, so that both processes answer some.
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: get(web.url + "/api/nexus/producer")[0], range(60)))
        assert answers == [200] * 60
        for _ in range(6):  # several scrapes: each may be answered by either process
            assert served() - before == 60
    finally:
        web.stop()
