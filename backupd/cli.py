"""backupctl: the operator's command line. Parses input, calls an action, prints."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from backupd.actions.backup import backup_source
from backupd.actions.reconcile import reconcile
from backupd.actions.restore import restore_to_dir
from backupd.cli_common import clean_errors, context
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
    ctx = context(obj)
    host, source = ctx.lookup_one(target)
    for f in restore_to_dir(ctx, host, source, to, archive=archive, force=force):
        click.echo(f"{f.path}  {f.nbytes} bytes  sha256 {f.sha256}  (from {f.archive}, verified)")


from backupd.cli_admin import catalogue  # noqa: E402  (registered below)
from backupd.cli_inspect import archives, runs, status  # noqa: E402

for command in (status, archives, runs, catalogue):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="backupctl")
