"""``pip install .`` (not editable) into a fresh venv: the SQL ships inside the package, so
``nexus db upgrade`` and ``nexus status`` work from a directory that is not the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path, empty_db_url):
    # Build the wheel as `pip install .` does (an isolated build, setup.py's hook included).
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)])
    (wheel,) = wheels.glob("nexus-*.whl")

    # A fresh venv.  Its dependencies come from this test's venv through a .pth line (no
    # download); nexus itself only from the wheel: the line adds a plain directory, whose own
    # .pth files (the editable install's finder) are not processed.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    site = run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    ).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin",
        "DATABASE_URL": empty_db_url,
        "HOME": str(tmp_path),
    }
    where = run(
        [str(python), "-c", "import nexus.db as d; print(d.__file__); print(d.SQL_DIR)"],
        cwd=elsewhere,
        env=env,
    ).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where

    upgrade = run(["nexus", "db", "upgrade"], cwd=elsewhere, env=env)
    assert "applied 0001_schema" in upgrade.stdout and "applied 0008_operations" in upgrade.stdout
    status = run(["nexus", "status"], cwd=elsewhere, env=env)
    assert "Queue rows" in status.stdout and "pending" in status.stdout
    # The worker's package ships too: the Procfile's worker imports it.
    run([str(python), "-c", "import workers.pipeline, nexus.web"], cwd=elsewhere, env=env)
    # The admin dashboard's templates and stylesheet ship too.
    admin = (
        "from nexus.web import create_app; c = create_app().test_client(); "
        "print(c.get('/admin/login').status_code, c.get('/admin/static/admin.css').status_code)"
    )
    shown = run(
        [str(python), "-c", admin], cwd=elsewhere, env={**env, "NEXUS_ADMIN_TOKEN": "t" * 20}
    )
    assert shown.stdout.split() == ["200", "200"]
