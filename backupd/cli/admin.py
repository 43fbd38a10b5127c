"""backupctl commands that look after backupd itself: the config, the catalogue."""

from __future__ import annotations

import sys
from typing import Any

import click

from backupd.actions.check import Finding, check_everything
from backupd.actions.rebuild import rebuild_catalogue
from backupd.cli.common import clean_errors, context, emit_json
from backupd.errors import ConfigError


@click.group()
def catalogue() -> None:
    """Look after the catalogue (the record of runs and archives)."""


@catalogue.command("rebuild")
@click.pass_obj
@clean_errors
def catalogue_rebuild(obj: dict[str, Any]) -> None:
    """Rebuild an empty catalogue from the Borg repositories alone.

    Every archive's comment holds its host, source, item, sha256, size, facts, run and
    everything that run planned to pull: hosts, sources, runs and archives come back as
    they were. A run whose planned set the repository does not hold whole comes back as
    failed (never as a success that would be restored in part). Runs that archived
    nothing, alerts and drills are not in Borg and do not come back. Refuses a catalogue
    that already lists archives: move the old one away first.

    \b
    Examples:
      mv /var/lib/backupd/catalogue.db /var/lib/backupd/catalogue.db.broken
      backupctl catalogue rebuild
    """
    summary = rebuild_catalogue(context(obj))
    click.echo(
        f"rebuilt {summary.archives} archive(s) in {summary.runs} run(s) from "
        f"{summary.repositories} repositories"
    )
    if summary.incomplete:
        click.echo(
            f"{summary.incomplete} run(s) did not archive their whole set: recorded "
            "as failed (backupctl runs --status failed)"
        )
    for name in summary.skipped:
        click.echo(f"  skipped {name}: not a sealed backupd archive", err=True)


@click.group("config")
def config_group() -> None:
    """Check the configuration."""


@config_group.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@clean_errors
def config_check(obj: dict[str, Any], as_json: bool) -> None:
    """Check the config, then reach every host and source as tonight's backup would.

    One line per check: the config itself, the store's free space, the Borg passphrase
    (it must open every existing repository), each host (pinned host key, login) and each
    source (planned on its droplet, its tools found where they run). Exits 1 if any
    check failed.

    \b
    Examples:
      backupctl config check
      backupctl --config /etc/backupd/backupd.toml config check --json
    """
    try:
        ctx = context(obj)
    except ConfigError as e:
        if not as_json:
            raise
        # a script asked for JSON: the same object, its one check the config (exit 2)
        emit_json(checks=[Finding("config", False, str(e))])
        sys.exit(e.exit_code)
    checks = []
    for c in check_everything(ctx):  # each line as it comes: a slow host holds up no other
        checks.append(c)
        if not as_json:
            verdict = "FAIL" if not c.ok else "warn" if c.warning else "ok"
            click.echo(f"{verdict:4}  {c.subject}: {c.detail}")
    if as_json:
        emit_json(checks=checks)
    if not all(c.ok for c in checks):
        sys.exit(1)
