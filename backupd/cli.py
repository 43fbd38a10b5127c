"""backupctl: the operator's command line. Parses input, calls an action, prints."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from backupd.actions.backup import backup_source
from backupd.actions.context import Context
from backupd.actions.reconcile import reconcile
from backupd.actions.restore import restore_to_dir
from backupd.actions.status import queue_rows, status_rows
from backupd.config import DEFAULT_CONFIG, load_config
from backupd.errors import BackupdError
from backupd.logs import setup_logging

log = logging.getLogger("backupctl")
P = ParamSpec("P")
R = TypeVar("R")


def clean_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a BackupdError into one line on stderr and its exit code, never a traceback."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except BackupdError as e:
            click.echo(f"backupctl: error: {e}", err=True)
            sys.exit(e.exit_code)
        except (click.exceptions.Exit, click.ClickException, SystemExit, KeyboardInterrupt):
            raise
        except Exception as e:
            # A bug, not an operator error: one line, the traceback only with --verbose.
            log.debug("internal error", exc_info=True)
            click.echo(
                f"backupctl: internal error: {type(e).__name__}: {e} "
                "(run with --verbose for the traceback)",
                err=True,
            )
            sys.exit(70)

    return wrapper


def _context(obj: dict[str, Any]) -> Context:
    if "ctx" not in obj:
        obj["ctx"] = Context(load_config(obj["config"]))
    ctx: Context = obj["ctx"]
    return ctx


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "-c",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CONFIG,
    show_default=True,
    envvar="BACKUPD_CONFIG",
    help="Configuration file.",
)
@click.option("--verbose", "-v", is_flag=True, help="Log each command run.")
@click.pass_context
def cli(click_ctx: click.Context, config: Path, verbose: bool) -> None:
    """Operate backupd: back up, restore and inspect the fleet's backups.

    \b
    Examples:
      backupctl status
      backupctl backup now web1/maindb
      backupctl restore web1/maindb --to /srv/restore
    """
    setup_logging(verbose, quiet=True)
    click_ctx.obj = {"config": config}


@cli.group()
def backup() -> None:
    """Run backups by hand."""


@backup.command("now")
@click.argument("target", metavar="HOST[/SOURCE]")
@click.pass_obj
@clean_errors
def backup_now(obj: dict[str, Any], target: str) -> None:
    """Back up one source, or every source of a host, now.

    \b
    Examples:
      backupctl backup now web1/maindb
      backupctl backup now web1
    """
    ctx = _context(obj)
    host, sources = ctx.lookup(target)
    reconcile(ctx)
    failed = 0
    for source in sources:
        outcome = backup_source(ctx, host, source, trigger="manual")
        if outcome.ok:
            click.echo(
                f"{outcome.host}/{outcome.source}: ok, {len(outcome.archives)} "
                f"archive(s), {outcome.nbytes} bytes (run {outcome.run_id})"
            )
        else:
            failed += 1
            click.echo(f"{outcome.error}", err=True)
    if failed:
        sys.exit(1)


@cli.command()
@click.argument("target", metavar="HOST/SOURCE")
@click.option(
    "--to",
    "to",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the dump file(s) into.",
)
@click.option("--archive", help="Restore this archive instead of the newest good one.")
@click.option("--force", is_flag=True, help="Replace files that already exist in --to.")
@click.pass_obj
@clean_errors
def restore(obj: dict[str, Any], target: str, to: Path, archive: str | None, force: bool) -> None:
    """Restore the newest good backup of a source (or --archive NAME) into a directory.

    Every file is checked against the sha256 recorded at backup time before it is
    put in place; nothing existing is overwritten without --force.

    \b
    Examples:
      backupctl restore web1/maindb --to /srv/restore
      backupctl restore web1/maindb --to /srv/restore --archive maindb.app.2026-11-20T03:00:00.000Z
    """
    ctx = _context(obj)
    host, source = ctx.lookup_one(target)
    for f in restore_to_dir(ctx, host, source, to, archive=archive, force=force):
        click.echo(f"{f.path}  {f.nbytes} bytes  sha256 {f.sha256}  (from {f.archive}, verified)")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_obj
@clean_errors
def status(obj: dict[str, Any], as_json: bool) -> None:
    """Show, per host and source, the last success and the last outcome.

    \b
    Examples:
      backupctl status
      backupctl status --json
    """
    rows = status_rows(_context(obj))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("HOST/SOURCE", "KIND", "LAST SUCCESS", "LAST STATUS")
    table = [header] + [
        (
            f"{r['host']}/{r['source']}",
            r["kind"],
            r["last_success"] or "never",
            r["last_status"] or "-",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for r in rows:
        if r["last_status"] == "failed":
            click.echo(f"  ! {r['last_error']}")
    jobs = queue_rows(_context(obj))
    if jobs:
        click.echo("\nDaemon queue:")
        for j in jobs:
            click.echo(f"  {j['state']:8} {j['job']} {j['target']} ({j['trigger']}, attempt "
                       f"{j['attempt']}, since {j['since']})")  # fmt: skip


def main() -> None:
    cli(prog_name="backupctl")
