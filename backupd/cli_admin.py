"""backupctl commands that look after backupd itself: the catalogue, (later) keys, hosts."""

from __future__ import annotations

from typing import Any

import click

from backupd.actions.rebuild import rebuild_catalogue
from backupd.cli_common import clean_errors, context


@click.group()
def catalogue() -> None:
    """Look after the catalogue (the record of runs and archives)."""


@catalogue.command("rebuild")
@click.pass_obj
@clean_errors
def catalogue_rebuild(obj: dict[str, Any]) -> None:
    """Rebuild an empty catalogue from the Borg repositories alone.

    Every archive's comment holds its host, source, item, sha256, size, facts and run:
    hosts, sources, succeeded runs and archives come back as they were. Failed runs,
    alerts and drills are not in Borg and do not come back. Refuses a catalogue that
    already lists archives: move the old one away first.

    \b
    Examples:
      mv /var/lib/backupd/catalogue.db /var/lib/backupd/catalogue.db.broken
      backupctl catalogue rebuild
    """
    summary = rebuild_catalogue(context(obj))
    click.echo(f"rebuilt {summary.archives} archive(s) in {summary.runs} run(s) from "
               f"{summary.repositories} repositories")  # fmt: skip
    for name in summary.skipped:
        click.echo(f"  skipped {name}: not a sealed backupd archive", err=True)
