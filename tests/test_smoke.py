"""``make smoke`` as a test: web, worker and clock started for real on a throwaway database."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nexus import config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_smoke_passes_and_drops_its_database(server_url):
    env = {k: v for k, v in os.environ.items() if k not in config.VARIABLES}
    env["DATABASE_URL"] = server_url
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    result = subprocess.run(
        [sys.executable, "-m", "nexus.cli", "smoke"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"nombre": "Juan Pérez"' in result.stdout
    assert '"status": "completed"' in result.stdout
    assert "POST-to-completed:" in result.stdout

    import psycopg2

    conn = psycopg2.connect(server_url)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'nexus_smoke_%'")
        assert cur.fetchone()[0] == 0, "smoke left its database behind"
    conn.close()
