"""The ``nexus`` command as an operator runs it: real subprocesses, real databases."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

NEXUS = [sys.executable, "-m", "nexus.cli"]
ROOT = Path(__file__).resolve().parent.parent


def run(args, **env):
    full_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    full_env.update(env)
    return subprocess.run(
        NEXUS + args, capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=60
    )


def test_db_upgrade_twice_then_status(empty_db_url):
    first = run(["db", "upgrade"], DATABASE_URL=empty_db_url)
    assert first.returncode == 0, first.stderr
    assert "applied 0001_schema" in first.stdout
    second = run(["db", "upgrade"], DATABASE_URL=empty_db_url)
    assert second.returncode == 0 and "nothing pending" in second.stdout
    status = run(["db", "status"], DATABASE_URL=empty_db_url)
    assert "applied  0001_schema" in status.stdout and "pending" not in status.stdout.replace(
        "applied", ""
    )


def test_unreachable_database_is_one_line_without_traceback(tmp_path):
    result = run(["db", "upgrade"], DATABASE_URL=f"postgresql://postgres@/x?host={tmp_path}")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nexus: cannot connect to the database")


def test_bad_configuration_is_one_line_naming_the_variable():
    result = run(["db", "upgrade"], DATABASE_URL="postgresql://x@/y", NEXUS_MAX_RETRIES="many")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "nexus: NEXUS_MAX_RETRIES must be an integer, got 'many'"
    ]


def test_unknown_model_stops_with_one_line():
    result = run(["db", "upgrade"], DATABASE_URL="postgresql://x@/y", NEXUS_MODEL="claude-5-mini")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("nexus: NEXUS_MODEL 'claude-5-mini' is not a model")


def test_holder_death_stops_the_embedded_server(tmp_path):
    """SIGKILL of the holding process: its postgres shuts down by itself (no orphan)."""
    code = (
        "import sys, time\n"
        "from nexus.embedded import EmbeddedServer\n"
        f"s = EmbeddedServer({str(tmp_path / 'pg')!r})\n"
        "print(s.start(), s.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    ) as holder:
        url, pid = holder.stdout.readline().split()
        psycopg2.connect(url).close()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        deadline = time.monotonic() + 30
        while _alive(int(pid)):
            assert time.monotonic() < deadline, "postgres outlived its holder"
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too (reaped by init eventually).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("holder_exit", ["sigterm", "sigint"])
def test_holder_signal_stops_the_server_cleanly(tmp_path, holder_exit):
    code = (
        "import sys, time\n"
        "from nexus.embedded import EmbeddedServer\n"
        f"with EmbeddedServer({str(tmp_path / 'pg')!r}) as s:\n"
        "    import signal\n"
        "    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "    try:\n"
        "        print(s.url, s.process.pid, flush=True)\n"
        "        time.sleep(600)\n"
        "    except KeyboardInterrupt:\n"
        "        pass\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    ) as holder:
        _, pid = holder.stdout.readline().split()
        holder.send_signal(signal.SIGTERM if holder_exit == "sigterm" else signal.SIGINT)
        assert holder.wait(timeout=60) == 0
    assert not _alive(int(pid))
    assert not (tmp_path / "pg" / "postmaster.pid").exists()
