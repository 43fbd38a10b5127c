"""backupctl backup now: run a backup by hand."""

from __future__ import annotations

import sys
from typing import Any

import click

from backupd.actions.backup import backup_source
from backupd.actions.reconcile import reconcile
from backupd.catalogue import RunStatus
from backupd.cli.common import clean_errors, context


@click.group()
def backup() -> None:
    """Run backups by hand."""


@backup.command("now")
@click.argument("target", metavar="HOST[/SOURCE]")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="One line per step on stderr (default: when stderr is a terminal).",
)
@click.pass_obj
@clean_errors
def backup_now(obj: dict[str, Any], target: str, progress: bool | None) -> None:
    """Back up one source, or every source of a host, now.

    \b
    Examples:
      backupctl backup now web1/maindb
      backupctl backup now web1 --progress 2>&1 | tee backup.log
    """
    show = sys.stderr.isatty() if progress is None else progress
    say = (lambda line: click.echo(line, err=True)) if show else None
    ctx = context(obj)
    host, sources = ctx.lookup(target)
    reconcile(ctx, sweep_repositories=False)  # the daemon sweeps repositories at start
    failed = 0
    for source in sources:
        outcome = backup_source(ctx, host, source, trigger="manual", progress=say)
        if outcome.ok:
            # a warning's text is on stderr already (the action logs it, as "warning: ...")
            said = "warning" if outcome.status == RunStatus.WARNING else "ok"
            click.echo(
                f"{outcome.host}/{outcome.source}: {said}, {len(outcome.archives)} "
                f"archive(s), {outcome.nbytes} bytes (run {outcome.run_id})"
            )
            for line in outcome.changes:
                click.echo(f"{outcome.host}/{outcome.source}: {line}")
        else:
            failed += 1
            click.echo(f"{outcome.error}", err=True)
    if failed:
        sys.exit(1)
