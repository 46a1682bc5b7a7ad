"""The ``nexus`` command: database migrations, the process holder for ``make run``, the clock,
``make smoke``, and the extraction tool.

Errors an operator can fix (configuration, unreachable database, a bad migration) print one
line on stderr and exit 1 -- no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from . import __version__, config, migrations
from .embedded import CHECKOUT, database, resolve_url
from .errors import NexusError


def _settings() -> config.Settings:
    return config.load()


def cmd_db(args: argparse.Namespace) -> int:
    url = resolve_url(_settings())
    if args.action == "upgrade":
        applied = migrations.upgrade(url)
        if applied:
            for m in applied:
                print(f"applied {m.version}_{m.name}")
        else:
            print("nothing pending: the database is up to date")
    else:
        applied, pending = migrations.status(url)
        for m in applied:
            print(f"applied  {m.version}_{m.name}")
        for m in pending:
            print(f"pending  {m.version}_{m.name}")
    return 0


def _child_env(url: str) -> dict[str, str]:
    env = dict(os.environ, DATABASE_URL=url)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def cmd_run(args: argparse.Namespace) -> int:
    """Hold the database, apply migrations, then run web + worker + clock under honcho."""
    settings = _settings()
    # One prometheus multiprocess directory for web and worker, fresh each run (the library
    # wants it empty at start), unless the operator named one.
    with database(settings, "run") as url, tempfile.TemporaryDirectory(prefix="nexus-prom-") as tmp:
        env = _child_env(url)
        env["PROMETHEUS_MULTIPROC_DIR"] = settings.metrics_dir or tmp
        for m in migrations.upgrade(url):
            print(f"applied {m.version}_{m.name}", flush=True)
        procfile = str(CHECKOUT / "Procfile")
        cmd = ["honcho", "-f", procfile, "-d", str(CHECKOUT), "start", "-p", str(settings.port)]
        cmd += ["web", "worker", "clock"]
        # honcho runs in a session of its own: Ctrl-C reaches only us, and we ask honcho to
        # stop its processes once (gracefully), then stop postgres when it is done.
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGINT)


def cmd_clock(args: argparse.Namespace) -> int:
    from .scheduler import main as clock_main

    return clock_main()


def cmd_smoke(args: argparse.Namespace) -> int:
    from .smoke import main as smoke_main

    return smoke_main()


def cmd_extract(args: argparse.Namespace, rest: list[str]) -> int:
    from .extraction import cli_main

    return cli_main(rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nexus", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"nexus {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    db_parser = sub.add_parser("db", help="database migrations")
    db_parser.add_argument("action", choices=["upgrade", "status"])
    db_parser.set_defaults(func=cmd_db)
    sub.add_parser("run", help="web + worker + clock on one database").set_defaults(func=cmd_run)
    sub.add_parser("clock", help="the periodic scheduler").set_defaults(func=cmd_clock)
    sub.add_parser("smoke", help="end-to-end check on a fresh database").set_defaults(
        func=cmd_smoke
    )
    sub.add_parser("extract", help="extract a prospect from a conversation file", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if argv[:1] == ["extract"]:
            return cmd_extract(argparse.Namespace(), argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except NexusError as exc:
        print(f"nexus: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
