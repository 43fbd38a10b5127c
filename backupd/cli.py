"""backupctl: the operator's command line. Parses input, calls an action, prints."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from backupd.actions.backup import backup_source
from backupd.actions.reconcile import reconcile
from backupd.actions.restore import DirRequest, plan_restore_to_dir, restore_to_dir
from backupd.actions.tree import TREE_FILENAME
from backupd.cli_common import clean_errors, context, parse_at
from backupd.config import DEFAULT_CONFIG
from backupd.logs import setup_logging


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
    ctx = context(obj)
    host, sources = ctx.lookup(target)
    reconcile(ctx, sweep_repositories=False)  # the daemon sweeps repositories at start
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
@click.option("--to", "to", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory to write the dump file(s) or the tree into.")  # fmt: skip
@click.option("--archive", help="Restore this archive (see: backupctl archives).")
@click.option(
    "--at",
    "at",
    metavar="TIME",
    callback=parse_at,
    help='The newest good backup at or before TIME, e.g. "2026-11-20 03:00" (UTC).',
)
@click.option("--dry-run", is_flag=True, help="Print what would be restored; change nothing.")
@click.option("--force", is_flag=True, help="Replace what already exists in --to.")
@click.pass_obj
@clean_errors
def restore(obj: dict[str, Any], target: str, to: Path, archive: str | None,
            at: datetime | None, dry_run: bool, force: bool) -> None:  # fmt: skip
    """Restore the newest good backup of a source (or --at TIME, or --archive NAME).

    Every file is checked against what was recorded at backup time (sha256, the tree's
    manifest) before it is put in place; nothing existing is overwritten without --force.

    \b
    Examples:
      backupctl restore web1/maindb --to /srv/restore --dry-run
      backupctl restore web1/maindb --to /srv/restore
      backupctl restore web1/maindb --to /srv/restore --at "2026-11-20 03:00"
      backupctl restore web1/uploads --to /srv/up2 --archive uploads.data.2026-11-20T02:14:09.120Z
    """
    if archive and at:
        raise click.UsageError("give --archive or --at, not both")
    ctx = context(obj)
    host, source = ctx.lookup_one(target)
    req = DirRequest(to, archive, at, force)
    if dry_run:
        chosen = plan_restore_to_dir(ctx, host, source, req)
        for a in chosen:
            where = to if a.filename == TREE_FILENAME else to / a.filename
            click.echo(f"would restore {a.name} ({a.created_at.isoformat(timespec='seconds')}, "
                       f"{a.nbytes} bytes) -> {where}")  # fmt: skip
        click.echo("dry run: nothing was changed")
        return
    for f in restore_to_dir(ctx, host, source, req):
        click.echo(f"{f.path}  {f.nbytes} bytes  sha256 {f.sha256}  (from {f.archive}, verified)")


from backupd.cli_admin import catalogue, config_group  # noqa: E402  (registered below)
from backupd.cli_inspect import archives, runs, status  # noqa: E402

for command in (status, archives, runs, catalogue, config_group):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="backupctl")
