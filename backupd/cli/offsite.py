"""backupctl offsite: the second copy of the store, off the backup host (issue 18)."""

from __future__ import annotations

import sys
from typing import Any

import click

from backupd.actions.context import Context
from backupd.actions.maintain import run_maintenance
from backupd.actions.offsite_restore import restore_from
from backupd.actions.status import offsite_rows
from backupd.cli.common import clean_errors, context, emit_json, short_time, table
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
@click.option(
    "--accept-shrink",
    is_flag=True,
    help="Copy even a repository that lost more than [offsite] max_shrink of its copy.",
)
@click.pass_obj
@clean_errors
def run(obj: dict[str, Any], host: str | None, accept_shrink: bool) -> None:
    """Copy HOST's repository to every remote now, as the daily job does: under the
    repository's Borg lock, then a sample read back, then the copy's manifest. Without
    HOST: every host's, then the catalogue's repository (_catalogue) and the key bundle.
    Exits 19 if a copy failed (the next run resumes it). A repository that lost more than
    [offsite] max_shrink of what its copy holds is not copied (archives deleted?) unless
    --accept-shrink says it is meant.

    \b
    Examples:
      backupctl offsite run
      backupctl offsite run web1
      backupctl offsite run web1 --accept-shrink
    """
    ctx = context(obj)
    planned: list[tuple[str, str | None]] = [("offsite", h) for h in _hosts(ctx, host)]
    if not host:
        planned.append(("offsite_catalogue", None))
    _run_jobs(ctx, planned, frozenset({"shrink"}) if accept_shrink else frozenset())


def _hosts(ctx: Context, host: str | None) -> list[str]:
    """HOST, or every configured host; UsageError without [offsite] or for an unknown one."""
    if ctx.config.offsite is None:
        raise UsageError("no [offsite] table in the configuration (docs/config.md#offsite)")
    if host and host not in ctx.config.hosts:
        raise UsageError(
            f"unknown host {host!r} (configured: {', '.join(sorted(ctx.config.hosts))})"
        )
    return [host] if host else sorted(ctx.config.hosts)


def _run_jobs(
    ctx: Context, planned: list[tuple[str, str | None]], accepted: frozenset[str] = frozenset()
) -> None:
    """Run each (job, host) as the daemon would: a line for each that went well; exit 19
    if any failed (each failure said once, as it happened, by run_maintenance's log)."""
    failed = 0
    for job, name in planned:
        outcome = run_maintenance(ctx, job, name, "backupctl", accepted)
        if outcome.ok:
            click.echo(f"{name or 'catalogue and keys'}: {outcome.summary}")
        else:
            failed += 1
    if failed:
        sys.exit(OffsiteError.exit_code)


@offsite_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@clean_errors
def status(obj: dict[str, Any], as_json: bool) -> None:
    """When each host's repository was last copied off site, when its copies last
    restored in a drill (`offsite drill`), and how the newest copy run ended.

    \b
    Examples:
      backupctl offsite status
      backupctl offsite status --json | jq '.hosts[] | select(.copy_verified == null)'
    """
    ctx = context(obj)
    if as_json:
        emit_json(hosts=offsite_rows(ctx))
        return
    copies = offsite_rows(ctx)
    rows = [
        (
            c["host"],
            short_time(c["last_copied"]) if c["last_copied"] else "never",
            short_time(c["copy_verified"]) if c["copy_verified"] else "never",
            c["last_status"] or "-",
            c["drill_status"] or "-",
        )
        for c in copies
    ]
    table(("HOST", "LAST COPIED", "COPY VERIFIED", "LAST COPY", "LAST DRILL"), rows)
    for c in copies:  # why, whole: a person reads it to know what to do
        if c["last_status"] in ("failed", "warning"):
            click.echo(f"  ! copy: {c['last_error']}")
        if c["drill_status"] in ("failed", "warning"):
            click.echo(f"  ! drill: {c['drill_error']}")


@offsite_group.command("restore-from")
@click.argument("hosts", nargs=-1)
@click.option("--remote", "remote_name", help="The [offsite.remotes.NAME] to bring back from.")
@click.pass_obj
@clean_errors
def restore_from_cmd(obj: dict[str, Any], hosts: tuple[str, ...], remote_name: str | None) -> None:
    """The backup host is gone: bring HOSTS' repositories (default: every host's and the
    catalogue's, _catalogue) back from the off-site copy into the store, each as its
    newest complete copy. Never writes over a repository in the store (exit 9 before
    anything is fetched). Then, on a new catalogue, `backupctl catalogue rebuild`; a
    catalogue kept has the archives made after the copy marked gone.

    \b
    Examples:
      backupctl offsite restore-from
      backupctl offsite restore-from web1 --remote eu
    """
    ctx = context(obj)
    back = restore_from(ctx, remote_name, hosts)
    for r in back.repositories:
        click.echo(
            f"{r.name}: {r.archives} {_archives(r.archives)}, copied {r.copied_at}, "
            f"{r.files} files "
            f"({r.bytes} bytes) into {r.repository}; key {r.key}"
            + (f"; {r.gone} {_archives(r.gone)} made after the copy marked gone" if r.gone else "")
        )
    click.echo(back.bundle)
    if back.missing:
        click.echo(f"no copy on {back.remote}: {', '.join(back.missing)}")
    if back.kept:
        click.echo(f"kept as they are (already in the store): {', '.join(back.kept)}")
    if back.elsewhere:
        click.echo(f"also on {back.remote}, not configured here: {', '.join(back.elsewhere)}")
    if back.rebuild:
        click.echo("next: backupctl catalogue rebuild")


@offsite_group.command("drill")
@click.argument("host", required=False)
@click.pass_obj
@clean_errors
def drill(obj: dict[str, Any], host: str | None) -> None:
    """Restore drill of HOST's off-site copy (every host's without one) on every remote
    now, as the monthly job does: the copy's newest complete state fetched into the store
    (as big as the repository; removed after), then per source its newest restore point in
    the copy restored and checked as a drill does. Exits 19 if a copy did not restore.

    \b
    Examples:
      backupctl offsite drill web1
      backupctl offsite drill
    """
    ctx = context(obj)
    _run_jobs(ctx, [("offsite_drill", h) for h in _hosts(ctx, host)])


def _archives(n: int) -> str:
    return "archive" if n == 1 else "archives"
