"""The benchmark's peer, dramatiq-postgres, in a venv of its own (``bench/.peer-venv``).

It depends on psycopg 3, and with psycopg 3 installed SQLAlchemy maps a bare
``postgresql://`` to it instead of psycopg2: so it never goes into the project's venv.

    python bench/peer_dramatiq_postgres.py init URL   # (in the peer venv) create its schema
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

VENV = Path(__file__).resolve().parent / ".peer-venv"
#: The version measured.
REQUIREMENT = "dramatiq-postgres==1.4.0"


def python() -> Path:
    """The peer venv's interpreter, creating the venv (from PyPI) if it is missing."""
    exe = VENV / "bin" / "python"
    probe = [str(exe), "-c", "import dramatiq_postgres, psycopg"]
    if exe.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return exe
    venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    subprocess.run(
        [str(exe), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", REQUIREMENT],
        check=True,
    )
    subprocess.run(probe, check=True)
    return exe


def version(exe: Path) -> str:
    return subprocess.run(
        [str(exe), "-c", "import importlib.metadata as m; print(m.version('dramatiq-postgres'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def init(url: str) -> None:
    """Create dramatiq-postgres's schema in the database at ``url`` (run in the peer venv)."""
    import dramatiq_postgres
    import psycopg

    with psycopg.connect(url) as conn, conn.cursor() as cur:
        dramatiq_postgres.init(cur)


if __name__ == "__main__":
    if sys.argv[1:2] == ["init"] and len(sys.argv) == 3:
        init(sys.argv[2])
    else:
        sys.exit("usage: peer_dramatiq_postgres.py init URL")
