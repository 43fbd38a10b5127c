"""backupctl maintenance: the daemon's scheduled jobs (prune, compact, check, the
catalogue's copy, drills, the report, the off-site copy), how each stands, and one run by
hand: after a failed check is mended, to see it pass now rather than at its next firing."""

from __future__ import annotations

import sys
from typing import Any

import click

from backupd.actions.context import Context
from backupd.actions.maintain import jobs_for, run_maintenance
from backupd.actions.report_jobs import reason
from backupd.cli.common import clean_errors, context, short_time, table
from backupd.errors import UsageError


@click.group("maintenance")
def maintenance_group() -> None:
    """The scheduled maintenance jobs ([maintenance]): how each stands, and a run now.

    \b
    Examples:
      backupctl maintenance status
      backupctl maintenance run check web1
    """


@maintenance_group.command("status")
@click.pass_obj
@clean_errors
def status(obj: dict[str, Any]) -> None:
    """Each scheduled job (per host, or for the store): how its newest run ended and when,
    its last good run, and why the newest failed or warned, whole, below the table. Exits 1
    when a job's newest run failed.

    \b
    Examples:
      backupctl maintenance status
    """
    ctx = context(obj)
    cat = ctx.catalogue
    planned = jobs_for(ctx)
    names = dict.fromkeys(job for job, _ in planned)  # one look per job, for all its hosts
    last = {job: cat.last_maintenance(job) for job in names}
    last_good = {job: cat.last_good_maintenance(job) for job in names}
    rows, why, failed = [], [], False
    for job, host in planned:
        newest, good = last[job].get(host), last_good[job].get(host)
        state = newest.status if newest else "never run"
        rows.append(
            (
                job,
                host or "store",
                state,
                short_time(newest.finished_at) if newest else "-",
                short_time(good) if good else "never",
            )
        )
        if newest is not None and newest.status in ("failed", "warning"):
            why.append(f"  ! {job} {host or 'store'}: {reason(newest)}")
            failed = failed or newest.status == "failed"
    table(("JOB", "FOR", "LAST RUN", "ENDED", "LAST GOOD"), rows)
    for line in why:
        click.echo(line)
    if failed:
        sys.exit(1)


@maintenance_group.command("run")
@click.argument("job")
@click.argument("hosts", nargs=-1)
@click.pass_obj
@clean_errors
def run(obj: dict[str, Any], job: str, hosts: tuple[str, ...]) -> None:
    """Run JOB now, as the daemon would (recorded, alerted if it fails): for HOSTS (default:
    every host) if it is a job per repository, for the store if not. A line per run that
    went well; a failure is said as it happens; exits 1 if any failed.

    \b
    Examples:
      backupctl maintenance run check web1
      backupctl maintenance run compact
      backupctl maintenance run catalogue
    """
    ctx = context(obj)
    failed = 0
    for name, host in _planned(ctx, job, hosts):
        outcome = run_maintenance(ctx, name, host, "backupctl")
        if outcome.ok:
            said = f" ({outcome.error})" if outcome.error else ""  # a warning's why
            click.echo(f"{name} {host or 'store'}: {outcome.status}: {outcome.summary}{said}")
        else:
            failed += 1
    if failed:
        sys.exit(1)


def _planned(ctx: Context, job: str, hosts: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """(job, host) to run; UsageError for a job not scheduled by this configuration, an
    unknown host, or a host given to a job of the whole store."""
    planned = jobs_for(ctx)
    mine = [(j, h) for j, h in planned if j == job]
    if not mine:
        known = ", ".join(sorted({j for j, _ in planned}))
        raise UsageError(f"no maintenance job {job!r} in this configuration (jobs: {known})")
    if mine == [(job, None)]:
        if hosts:
            raise UsageError(f"{job} is a job of the whole store: give no host")
        return mine
    unknown = [h for h in hosts if (job, h) not in mine]
    if unknown:
        names = ", ".join(sorted(str(h) for _, h in mine))
        raise UsageError(f"unknown host {unknown[0]!r} (configured: {names})")
    return [(job, h) for h in hosts] if hosts else mine
