"""backupctl offsite: the second copy of the store, off the backup host (issue 18)."""

from __future__ import annotations

import sys
from typing import Any

import click

from backupd.actions.maintain import run_maintenance
from backupd.catalogue import RunStatus
from backupd.cli.common import clean_errors, context, short_time, table
from backupd.errors import OffsiteError, UsageError


@click.group("offsite")
def offsite_group() -> None:
    """The off-site copy ([offsite]): each host's repository copied to each remote daily
    (`[maintenance] offsite`), deletions held back in a trash for trash_days, a sample
    read back each time.

    \b
    Examples:
      backupctl offsite run web1
      backupctl offsite status
    """


@offsite_group.command("run")
@click.argument("host", required=False)
@click.pass_obj
@clean_errors
def run(obj: dict[str, Any], host: str | None) -> None:
    """Copy HOST's repository (every host's without one) to every remote now, as the
    daily job does: under the repository's Borg lock, then a sample read back, then the
    copy's manifest. Exits 19 if a copy failed (the next run resumes it).

    \b
    Examples:
      backupctl offsite run
      backupctl offsite run web1
    """
    ctx = context(obj)
    if ctx.config.offsite is None:
        raise UsageError("no [offsite] table in the configuration (docs/config.md#offsite)")
    hosts = [host] if host else sorted(ctx.config.hosts)
    if host and host not in ctx.config.hosts:
        raise UsageError(
            f"unknown host {host!r} (configured: {', '.join(sorted(ctx.config.hosts))})"
        )
    failed = 0
    for name in hosts:
        outcome = run_maintenance(ctx, "offsite", name, "backupctl")  # logs a failure
        if outcome.status in (RunStatus.SUCCEEDED, RunStatus.WARNING):
            click.echo(f"{name}: {outcome.summary}")
        else:
            failed += 1
    if failed:  # each said once, above, as it happened
        sys.exit(OffsiteError.exit_code)


@offsite_group.command("status")
@click.pass_obj
@clean_errors
def status(obj: dict[str, Any]) -> None:
    """When each host's repository was last copied off site, and the last attempt.

    \b
    Examples:
      backupctl offsite status
      backupctl offsite status | grep never
    """
    ctx = context(obj)
    runs = [r for r in ctx.catalogue.maintenance_runs(limit=10_000) if r.job == "offsite"]
    rows = []
    for name in sorted(ctx.config.hosts):
        mine = [r for r in runs if r.host == name]  # newest first
        good = next((r for r in mine if r.status == RunStatus.SUCCEEDED), None)
        last = mine[0] if mine else None
        rows.append(
            (
                name,
                short_time(good.finished_at) if good and good.finished_at else "never",
                f"{last.status}" if last else "-",
                ((last.error or last.summary or "") if last else "")[:100],
            )
        )
    table(("HOST", "LAST COPIED", "LAST RUN", "SAID"), rows)
