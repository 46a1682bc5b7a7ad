"""The ``nexus`` command: database migrations, the process holder for ``make run``, the clock,
``make smoke``, the extraction tool, and the operator's commands (status, failed, retry,
dead-letters, forget, prospects, cost).

Exit status: 0 done, 1 a failed check (unknown id, database unavailable, bad configuration: one
line on stderr, no traceback), 2 bad usage (click's own).  Operator commands print a table for
people, or with ``--json`` one JSON document on stdout for scripts.  Every command reads
``DATABASE_URL``, or uses the running embedded server.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from . import __version__, config, migrations, ops
from .embedded import CHECKOUT, database, resolve_url
from .errors import NexusError
from .tables import age, render_table, when

#: Columns of ``nexus prospects --csv`` (and of its table, minus the timestamps).
PROSPECT_COLUMNS = (
    "fingerprint_id",
    "nombre",
    "email",
    "telefono",
    "ocupacion",
    "nivel_interes",
    "objeciones",
    "arquetipo",
    "momento_optimo",
    "etapa",
    "created_at",
    "updated_at",
)


def _settings() -> config.Settings:
    return config.load()


def _engine():
    """A small engine for one command (``nexus-cli`` in pg_stat_activity)."""
    from . import db

    url = resolve_url(_settings())
    engine = db.make_engine(url, application_name="nexus-cli", pool_size=1, max_overflow=0)
    click.get_current_context().call_on_close(engine.dispose)
    return engine


def _emit_json(document) -> None:
    click.echo(json.dumps(ops.jsonable(document), indent=2, ensure_ascii=False))


class Duration(click.ParamType):
    """``30s``, ``15m``, ``2h``, ``7d``; a bad value is a usage error (exit 2)."""

    name = "duration"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return ops.parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Id(click.ParamType):
    """A queue row or message id (UUID); a malformed one is a usage error."""

    name = "id"

    def convert(self, value, param, ctx):
        try:
            return ops.parse_ids([value])[0]
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()
ID = Id()
json_option = click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nexus", message="%(prog)s %(version)s")
def cli() -> None:
    """nexus: conversations in PostgreSQL, prospects extracted by Dramatiq workers."""


# -- processes and the database ---------------------------------------------------------------


@cli.command("db")
@click.argument("action", type=click.Choice(["upgrade", "status"]))
def cmd_db(action: str) -> None:
    """Apply pending migrations, or list applied and pending ones."""
    url = resolve_url(_settings())
    if action == "upgrade":
        applied = migrations.upgrade(url)
        if applied:
            for m in applied:
                click.echo(f"applied {m.version}_{m.name}")
        else:
            click.echo("nothing pending: the database is up to date")
    else:
        applied, pending = migrations.status(url)
        for m in applied:
            click.echo(f"applied  {m.version}_{m.name}")
        for m in pending:
            click.echo(f"pending  {m.version}_{m.name}")


def _child_env(url: str) -> dict[str, str]:
    env = dict(os.environ, DATABASE_URL=url)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@cli.command("run")
def cmd_run() -> int:
    """Hold the database, apply migrations, then run web + worker + clock under honcho."""
    settings = _settings()
    procfile = CHECKOUT / "Procfile"
    if not procfile.is_file():
        raise NexusError(
            f"nexus run needs a checkout (no Procfile at {procfile}); in an installed "
            "package, run the Procfile's commands under your process manager"
        )
    # One prometheus multiprocess directory for web and worker, fresh each run (the library
    # wants it empty at start), unless the operator named one.
    with database(settings, "run") as url, tempfile.TemporaryDirectory(prefix="nexus-prom-") as tmp:
        env = _child_env(url)
        env["PROMETHEUS_MULTIPROC_DIR"] = settings.metrics_dir or tmp
        for m in migrations.upgrade(url):
            print(f"applied {m.version}_{m.name}", flush=True)
        cmd = [
            "honcho",
            "-f",
            str(procfile),
            "-d",
            str(CHECKOUT),
            "start",
            "-p",
            str(settings.port),
        ]
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


@cli.command("clock")
def cmd_clock() -> int:
    """The periodic scheduler."""
    from .scheduler import main as clock_main

    return clock_main()


@cli.command("smoke")
def cmd_smoke() -> int:
    """End-to-end check on a fresh database."""
    from .smoke import main as smoke_main

    return smoke_main()


@cli.command(
    "extract",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def cmd_extract(args: tuple[str, ...]) -> int:
    """Extract a prospect from a conversation file (nexus extract --help)."""
    from .extraction import cli_main

    return cli_main(list(args))


# -- operations -------------------------------------------------------------------------------


@cli.command("status")
@json_option
def cmd_status(as_json: bool) -> None:
    """Rows by status, oldest ages, broker backlog, dead letters, workers, clock, extractor."""
    report = ops.status(_engine(), _settings())
    if as_json:
        _emit_json(report)
        return
    rows = report["rows"]
    click.echo("Queue rows")
    click.echo(
        render_table(
            ["status", "last 24 h", "all time", "avg processing (24 h)"],
            [
                [s, r["last_24h"], r["total"], age(r["avg_processing_s_24h"])]
                for s, r in rows.items()
            ],
        )
    )
    click.echo(
        f"oldest pending: {age(report['oldest_pending_s'])}    "
        f"oldest processing: {age(report['oldest_processing_s'])}"
    )
    click.echo("\nBroker")
    click.echo(
        render_table(
            ["queue", "ready", "delayed", "claimed", "dead letters", "oldest ready"],
            [
                [
                    q["queue_name"],
                    q["ready"],
                    q["delayed"],
                    q["claimed"],
                    q["dead_letters"],
                    age(q["oldest_ready_s"]),
                ]
                for q in report["queues"]
            ],
            empty="(no messages, no dead letters)",
        )
    )
    click.echo(f"dead letters: {report['dead_letters']}")
    click.echo("\nWorkers")
    click.echo(
        render_table(
            ["host", "pid", "claims", "heartbeat", "lease until", "started"],
            [
                [
                    w["hostname"],
                    w["pid"],
                    w["claims"],
                    when(w["heartbeat_at"]),
                    when(w["lease_until"]),
                    when(w["started_at"]),
                ]
                for w in report["workers"]
            ],
            empty="(no live worker)",
        )
    )
    click.echo("\nPeriodic actors")
    click.echo(
        render_table(
            ["actor", "last slot", "fired at"],
            [[p["job"], when(p["slot"]), when(p["fired_at"])] for p in report["periodic"]],
            empty="(never fired: is `nexus clock` running?)",
        )
    )
    extraction = report["extraction"]
    configured = extraction["configured"]
    click.echo("\nExtraction")
    model = f", model {configured['model']}" if configured["model"] else ""
    click.echo(f"configured here: {configured['extractor']}{model}")
    click.echo(
        render_table(
            ["extractor", "model", "completed (24 h)"],
            [[u["extractor"], u["model"] or "-", u["rows"]] for u in extraction["last_24h"]],
            empty="(nothing completed in the last 24 h)",
        )
    )


@cli.command("failed")
@click.option("--since", type=DURATION, default="7d", show_default=True, help="Failed within.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@json_option
def cmd_failed(since, limit: int, as_json: bool) -> None:
    """Failed rows, newest first: id, session, fingerprint, reason, retry count, time."""
    rows = ops.failed_rows(_engine(), since=since, limit=limit)
    if as_json:
        _emit_json(rows)
        return
    click.echo(
        render_table(
            ["id", "session", "fingerprint", "retries", "failed at", "reason"],
            [
                [
                    r["id"],
                    r["session_id"],
                    r["fingerprint"] or "-",
                    r["retry_count"],
                    when(r["failed_at"]),
                    r["error_message"] or "-",
                ]
                for r in rows
            ],
            empty="(no failed row)",
            wrap_last=True,
        )
    )


@cli.command("retry")
@click.argument("ids", nargs=-1, type=ID)
@click.option("--all-failed", is_flag=True, help="Every failed row (within --since).")
@click.option("--since", type=DURATION, help="With --all-failed: rows that failed within.")
@json_option
def cmd_retry(ids: tuple[str, ...], all_failed: bool, since, as_json: bool) -> None:
    """Re-open failed rows as new versions; each is dispatched exactly once.

    With IDs, every id must be a failed row, else nothing is re-opened (exit 1).
    """
    if bool(ids) == all_failed:
        raise click.UsageError("give row ids or --all-failed (not both)")
    if since is not None and not all_failed:
        raise click.UsageError("--since goes with --all-failed")
    engine = _engine()
    if all_failed:
        count = ops.retry_failed(engine, since=since)
    else:
        count = ops.retry_rows(engine, ids, strict=True)
    if as_json:
        _emit_json({"retried": count})
    else:
        click.echo(f"re-opened {count} failed row{'s' if count != 1 else ''}")


@cli.group("dead-letters", invoke_without_command=True)
@json_option
@click.pass_context
def cmd_dead_letters(ctx: click.Context, as_json: bool) -> None:
    """The broker's dead letters (default: list them)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(cmd_dead_letters_list, as_json=as_json)


@cmd_dead_letters.command("list")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@json_option
def cmd_dead_letters_list(as_json: bool, limit: int = 100) -> None:
    """Dead letters, newest first."""
    rows = ops.dead_letters(_engine(), limit=limit)
    if as_json:
        _emit_json(rows)
        return
    click.echo(
        render_table(
            ["message id", "queue", "actor", "args", "retries", "failed at", "error"],
            [
                [
                    r["message_id"],
                    r["queue_name"],
                    r["actor_name"],
                    json.dumps(r["args"]),
                    r["retries"],
                    when(r["failed_at"]),
                    r["error"] or "-",
                ]
                for r in rows
            ],
            empty="(no dead letter)",
            wrap_last=True,
        )
    )


@cmd_dead_letters.command("show")
@click.argument("message_id", type=ID)
@json_option
def cmd_dead_letters_show(message_id: str, as_json: bool) -> None:
    """One dead letter in full, traceback included."""
    letter = ops.dead_letter(_engine(), message_id)
    if as_json:
        _emit_json(letter)
        return
    for key in (
        "message_id",
        "queue_name",
        "actor_name",
        "args",
        "kwargs",
        "options",
        "retries",
        "attempts",
        "enqueued_at",
        "failed_at",
        "error",
    ):
        value = letter[key]
        if isinstance(value, dict | list):
            value = json.dumps(value)
        click.echo(f"{key:12} {ops.jsonable(value)}")
    if letter["traceback"]:
        click.echo("traceback:\n" + letter["traceback"].rstrip())


@cmd_dead_letters.command("requeue")
@click.argument("ids", nargs=-1, type=ID)
@click.option("--all", "requeue_all", is_flag=True, help="Every dead letter.")
@json_option
def cmd_dead_letters_requeue(ids: tuple[str, ...], requeue_all: bool, as_json: bool) -> None:
    """Put dead letters back as ready messages (same message ids).

    A process_nexus_message dead letter whose queue row failed at that version also sets the
    row back to pending, so the requeued message processes it.  With IDs, every id must be a
    dead letter, else nothing is requeued (exit 1).
    """
    if bool(ids) == requeue_all:
        raise click.UsageError("give message ids or --all (not both)")
    engine = _engine()
    if requeue_all:
        count = ops.requeue_all_dead_letters(engine)
    else:
        count = ops.requeue_dead_letters(engine, ids, strict=True)
    if as_json:
        _emit_json({"requeued": count})
    else:
        click.echo(f"requeued {count} dead letter{'s' if count != 1 else ''}")


@cmd_dead_letters.command("purge")
@click.option("--older-than", type=DURATION, required=True, help="Failed more than this ago.")
@json_option
def cmd_dead_letters_purge(older_than, as_json: bool) -> None:
    """Delete dead letters that failed more than --older-than ago."""
    count = ops.purge_dead_letters(_engine(), older_than)
    if as_json:
        _emit_json({"purged": count})
    else:
        click.echo(f"purged {count} dead letter{'s' if count != 1 else ''}")


@cli.command("forget")
@click.argument("fingerprint")
@json_option
def cmd_forget(fingerprint: str, as_json: bool) -> None:
    """Erase a visitor: prospect, queue rows, merge ledger, their broker messages and dead
    letters.  Idempotent; same as SQL ``SELECT forget_visitor('FINGERPRINT')``."""
    if not fingerprint.strip():
        raise click.BadParameter("must not be empty", param_hint="FINGERPRINT")
    counts = ops.forget_visitor(_engine(), fingerprint)
    if as_json:
        _emit_json({"fingerprint": fingerprint, "deleted": counts, "total": sum(counts.values())})
        return
    click.echo(render_table(["deleted", "rows"], [[k, v] for k, v in counts.items()]))
    click.echo(f"total: {sum(counts.values())}")


@cli.command("prospects")
@click.option("--momento", type=click.Choice(ops.MOMENTOS), help="Only this momento_optimo.")
@click.option("--since", type=DURATION, help="Updated within.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=1000, show_default=True)
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row on stdout.")
@json_option
def cmd_prospects(momento, since, limit: int, as_csv: bool, as_json: bool) -> None:
    """The leads, most recently updated first."""
    if as_csv and as_json:
        raise click.UsageError("--csv and --json are exclusive")
    rows = ops.prospects(_engine(), momento=momento, since=since, limit=limit)
    if as_json:
        _emit_json(rows)
        return
    if as_csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(PROSPECT_COLUMNS)
        for r in rows:
            r = ops.jsonable(r)
            r["objeciones"] = ";".join(r["objeciones"])
            writer.writerow(["" if r[c] is None else r[c] for c in PROSPECT_COLUMNS])
        click.echo(buffer.getvalue(), nl=False)
        return
    click.echo(
        render_table(
            [
                "fingerprint",
                "nombre",
                "email",
                "telefono",
                "interés",
                "momento",
                "etapa",
                "objeciones",
                "updated",
            ],  # fmt: skip
            [
                [
                    r["fingerprint_id"],
                    r["nombre"] or "-",
                    r["email"] or "-",
                    r["telefono"] or "-",
                    "-" if r["nivel_interes"] is None else f"{r['nivel_interes']:g}",
                    r["momento_optimo"] or "-",
                    r["etapa"],
                    ",".join(r["objeciones"]) or "-",
                    when(r["updated_at"]),
                ]
                for r in rows
            ],
            empty="(no prospect)",
        )
    )


@cli.command("cost")
@click.option("--since", type=DURATION, help="Calls made within (default: all).")
@json_option
def cmd_cost(since, as_json: bool) -> None:
    """LLM calls, tokens by kind, cache-hit ratio, estimated USD by model."""
    report = ops.cost(_engine(), since=since)
    if as_json:
        _emit_json(report)
        return

    def line(name, m):
        t = m["tokens"]
        ratio = m["cache_hit_ratio"]
        return [
            name,
            m["calls"],
            m["failed_calls"],
            t["input"],
            t["output"],
            t["cache_write"],
            t["cache_read"],
            "-" if ratio is None else f"{ratio:.1%}",
            "?" if m["usd"] is None else f"{m['usd']:.4f}",
        ]

    rows = [line(m["model"], m) for m in report["models"]]
    if len(rows) > 1:
        rows.append(line("total", report["total"]))
    click.echo(
        render_table(
            [
                "model",
                "calls",
                "failed",
                "input",
                "output",
                "cache write",
                "cache read",
                "cache hit",
                "USD (est.)",
            ],  # fmt: skip
            rows,
            empty="(no LLM call recorded)",
        )
    )
    click.echo(f"prices read on {report['prices_read_on']}: {report['prices_source']}")


# -- entry point ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the command; return its exit status (0 done, 1 failed check, 2 bad usage)."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        result = cli.main(args=argv, prog_name="nexus", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        return 1
    except NexusError as exc:
        click.echo(f"nexus: {exc}", err=True)
        return 1
    except BrokenPipeError:
        # `nexus prospects --csv | head`: the reader left; not an error of ours.
        sys.stderr.close()
        return 0
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
