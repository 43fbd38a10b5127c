"""backupctl drill: prove now that a source restores (the weekly job does the same)."""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any

import click

from backupd.actions.drill import DrillResult, drill_source
from backupd.cli.common import clean_errors, context, emit_json
from backupd.cli.restore import say_waiting


@click.command()
@click.argument("target", metavar="HOST[/SOURCE]")
@click.option("--archive", help="Drill this archive instead of the newest (and an older one).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@clean_errors
def drill(obj: dict[str, Any], target: str, archive: str | None, as_json: bool) -> None:
    """Restore drill: restore into a throwaway target here, check, time it, record it.

    Databases are restored into a scratch PostgreSQL/MariaDB server that backupd starts in
    a temporary directory (unix socket only); files into a temporary directory. Each
    restore is checked against the facts recorded at backup time (sha256, row counts per
    table, every file's hash) and the source's own drill_sql / drill_paths. The verdict
    (pass, warn, fail) and the restore time (RTO) are recorded and shown by `status`;
    everything is removed afterwards. Exits 1 if any drill failed.

    \b
    Examples:
      backupctl drill web1/maindb
      backupctl drill web1
      backupctl drill web1/uploads --archive uploads.srv.2026-11-20T02:14:09.120Z --json
    """
    ctx = context(obj)
    host, sources = ctx.lookup(target)
    ctx.borg.doing = f"a drill of {target}"
    ctx.borg.on_wait = say_waiting  # a backup of ours holding the lock: say that we wait
    if archive is not None and len(sources) != 1:
        raise click.UsageError("--archive needs one source: HOST/SOURCE")
    results: list[DrillResult] = []
    for source in sources:
        results += drill_source(ctx, host, source, "manual", archive)
    if as_json:
        emit_json(drills=[_json_row(r) for r in results])
    else:
        for r in results:
            line = f"{r.verdict.upper():4}  {r.host}/{r.source}  {r.archive}  {r.rto_seconds:.1f}s"
            click.echo(
                click.style(line, fg="red", bold=True)
                if r.verdict == "fail" and sys.stdout.isatty()
                else line
            )
            for c in r.checks:
                click.echo(f"      {c.check}: {c.detail}")
            if r.detail:
                click.echo(f"      {r.detail}")
    if any(r.verdict == "fail" for r in results):
        sys.exit(1)


def _json_row(result: DrillResult) -> dict[str, Any]:
    """Every check carries ``warn`` (false unless it warned), so scripts need no default."""
    return {**asdict(result), "checks": [c.as_json() for c in result.checks]}
