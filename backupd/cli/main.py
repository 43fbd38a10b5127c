"""backupctl: the operator's command line. Parses input, calls an action, prints."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from backupd.actions.backup import backup_source
from backupd.actions.reconcile import reconcile
from backupd.catalogue import RunStatus
from backupd.cli.common import clean_errors, context, reader_went_away
from backupd.config.load import DEFAULT_CONFIG
from backupd.local.logs import setup_logging


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
        else:
            failed += 1
            click.echo(f"{outcome.error}", err=True)
    if failed:
        sys.exit(1)


from backupd.cli.admin import catalogue, config_group  # noqa: E402  (registered below)
from backupd.cli.alerts import alerts  # noqa: E402
from backupd.cli.drill import drill  # noqa: E402
from backupd.cli.find import diff, find, ls  # noqa: E402
from backupd.cli.inspect import archives, runs, status  # noqa: E402
from backupd.cli.keys import host_group, key_group  # noqa: E402
from backupd.cli.report import report  # noqa: E402
from backupd.cli.restore import restore  # noqa: E402

for command in (
    restore,
    drill,
    report,
    alerts,
    status,
    archives,
    runs,
    find,
    ls,
    diff,
    catalogue,
    config_group,
    host_group,
    key_group,
):
    cli.add_command(command)


def main() -> None:
    try:
        cli(prog_name="backupctl")
    except BrokenPipeError:  # outside a command (help, usage): the same quiet end
        reader_went_away()
