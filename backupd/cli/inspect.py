"""backupctl status, archives, runs: what is backed up, the restore points, the history."""

from __future__ import annotations

import sys
from typing import Any

import click

from backupd.actions.status import (
    key_exports_missing,
    offsite_rows,
    queue_rows,
    repositories_lost,
    status_rows,
)
from backupd.catalogue.changes import FlagView
from backupd.catalogue.models import RunStatus
from backupd.cli.common import (
    age,
    clean_errors,
    context,
    emit_json,
    short_time,
    since_time,
    table,
)
from backupd.config.units import human_bytes

STATUSES = [s.value for s in RunStatus]


def _style(text: str, bad: bool) -> str:
    return click.style(text, fg="red", bold=True) if bad and sys.stdout.isatty() else text


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@clean_errors
def status(obj: dict[str, Any], as_json: bool) -> None:
    """Is everything backed up? One line per source; stale sources stand out.

    A source is STALE when it has not succeeded for twice its schedule's interval.
    Exits 1 when any source is stale or a repository is gone from the store, so scripts
    and monitoring can use it. Warns (without
    changing the exit code) about repositories whose key was never exported and about
    unacknowledged change alerts (nights that looked like loss: backupctl alerts).

    \b
    Examples:
      backupctl status
      backupctl status --json | jq '.sources[] | select(.stale)'
    """
    ctx = context(obj)
    rows, jobs, unexported = status_rows(ctx), queue_rows(ctx), key_exports_missing(ctx)
    changes = ctx.catalogue.change_flags(open_only=True)
    copies = offsite_rows(ctx)
    if as_json:
        emit_json(
            sources=rows,
            queue=jobs,
            key_exports_missing=unexported,
            open_change_alerts=len(changes),
            offsite=copies,
        )
    else:
        _print_status(rows, jobs, unexported, changes)
        for host, repo, listed in repositories_lost(ctx):  # before the rest: it is worst
            click.echo(
                _style(
                    f"! {repo}: gone, though the catalogue lists {listed} archive(s) of {host} "
                    "in it: the restore runbook, 'The store is lost'",
                    True,
                )
            )
        _print_offsite(copies)
    if any(r["stale"] for r in rows) or repositories_lost(ctx):  # lost: worse than stale
        sys.exit(1)


def _drill(d: dict[str, Any] | None) -> str:
    if d is None:
        return "never"
    seconds = d["rto_seconds"]
    rto = "" if seconds is None else f" {seconds:.1f}s" if seconds < 10 else f" {seconds:.0f}s"
    return f"{d['verdict']}{rto} {short_time(d['at'])[:10]}"


def _print_status(
    rows: list[dict[str, Any]],
    jobs: list[dict[str, Any]],
    unexported: list[dict[str, str]],
    changes: list[FlagView],
) -> None:
    header = (
        "HOST/SOURCE",
        "KIND",
        "LAST SUCCESS",
        "AGE",
        "STORED",
        "DEDUP",
        "LAST DRILL",
        "NEXT RUN",
        "LAST STATUS",
    )
    lines = []
    for r in rows:
        ratio = f"{r['dedup_ratio']:.1f}x" if r["dedup_ratio"] else "-"
        state = "STALE" if r["stale"] else (r["last_status"] or "-")
        lines.append(
            (
                f"{r['host']}/{r['source']}",
                r["kind"],
                short_time(r["last_success"]),
                age(r["age_seconds"]),
                human_bytes(r["stored_bytes"]),
                ratio,
                _drill(r["last_drill"]),
                short_time(r["next_run"]),
                state,
            )
        )
    table(header, lines)
    for r in rows:
        if r["last_status"] == "failed":
            click.echo(_style(f"  ! {r['last_error']}", True))
        elif r["last_failure"]:
            click.echo(f"  last failure {short_time(r['last_failure'])}: {r['last_failure_error']}")
        if r["last_status"] in ("failed", "interrupted") and r["items"]:
            # each archived item is a restore point of its own, whatever the night's outcome
            points = ", ".join(
                f"{i['item']} {short_time(i['last_archive_at'])}" for i in r["items"]
            )
            click.echo(f"  newest restore point per item: {points}")
        if r["stale"]:
            click.echo(
                _style(
                    f"  ! {r['host']}/{r['source']}: stale ("
                    + (
                        f"last success {age(r['age_seconds'])} ago)"
                        if r["age_seconds"] is not None
                        else "never succeeded)"
                    ),
                    True,
                )
            )
    for view in changes:  # a person must look; not stale, so not the exit code either
        line = f"  ! {view.host}/{view.source}: change alert {view.flag.id}: {view.flag.item}"
        line += f" looks like loss: {view.what} (backupctl alerts ack {view.flag.id})"
        click.echo(_style(line, True))
    for k in unexported:  # a warning only: exit 1 stays "a source is stale"
        click.echo(
            f"warning: the key of repository {k['repository']} (host {k['host']}) has "
            "never been exported: backupctl key export DIR"
        )
    if jobs:
        click.echo("\nDaemon queue:")
        for j in jobs:
            click.echo(
                f"  {j['state']:8} {j['job']} {j['target']} ({j['trigger']}, attempt "
                f"{j['attempt']}, since {j['since']})"
            )


def _print_offsite(copies: list[dict[str, Any]]) -> None:
    """One line per host's off-site copy (with [offsite]): a failed newest copy stands out."""
    if copies:
        click.echo("\nOff-site copies:")
    for c in copies:
        copied = short_time(c["last_copied"]) if c["last_copied"] else "never"
        verified = short_time(c["copy_verified"]) if c["copy_verified"] else "never"
        click.echo(f"  {c['host']}: copied {copied}, last proved restorable {verified}")
        if c["last_status"] == "failed":  # the error names the host already
            click.echo(_style(f"  ! the newest copy failed: {c['last_error']}", True))
        if c["drill_status"] == "failed":
            click.echo(_style(f"  ! the newest drill of the copy failed: {c['drill_error']}", True))


@click.command()
@click.argument("target", metavar="HOST[/SOURCE]")
@click.option("--all", "include_pruned", is_flag=True, help="Include pruned archives.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@clean_errors
def archives(obj: dict[str, Any], target: str, include_pruned: bool, as_json: bool) -> None:
    """List the restore points of a host or source, newest first.

    \b
    Examples:
      backupctl archives web1
      backupctl archives web1/maindb --json
    """
    ctx = context(obj)
    host, sources = ctx.lookup(target)
    source = sources[0].name if "/" in target else None
    rows = ctx.catalogue.archive_rows(host.name, source, include_pruned=include_pruned)
    if as_json:
        emit_json(archives=rows)
        return
    header = ("ARCHIVE", "CREATED", "SIZE", "ADDED", "SHA256", "VERIFIED")
    table(
        header,
        [
            (
                r.name,
                short_time(r.created_at),
                human_bytes(r.nbytes),
                human_bytes(r.deduplicated_size),
                r.sha256[:12] or "-",
                "pruned" if r.pruned_at else short_time(r.verified_at),
            )
            for r in rows
        ],
    )


@click.command()
@click.argument("target", metavar="[HOST[/SOURCE]]", required=False)
@click.option(
    "--status", "status_", type=click.Choice(STATUSES), help="Only runs with this status."
)
@click.option("--since", metavar="DURATION", help="Only runs started within, e.g. 24h or 7d.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@clean_errors
def runs(
    obj: dict[str, Any],
    target: str | None,
    status_: str | None,
    since: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Show backup run history, newest first, with filters.

    \b
    Examples:
      backupctl runs
      backupctl runs web1/maindb --status failed --since 7d
      backupctl runs --json --limit 500
    """
    ctx = context(obj)
    host = source = None
    if target:
        h, sources = ctx.lookup(target)
        host, source = h.name, (sources[0].name if "/" in target else None)
    rows = ctx.catalogue.run_history(host, source, status_, since_time(since), limit)
    if as_json:
        emit_json(runs=rows)
        return
    lines = []
    for r in rows:
        took = (r.finished_at - r.started_at).total_seconds() if r.finished_at else None
        lines.append(
            (
                str(r.id),
                f"{r.host}/{r.source}",
                r.trigger,
                _style(r.status, r.status in ("failed", "interrupted")),
                short_time(r.started_at),
                f"{took:.0f}s" if took is not None else "-",
                human_bytes(r.nbytes),
                (r.error or "")[:80],
            )
        )
    table(("RUN", "HOST/SOURCE", "TRIGGER", "STATUS", "STARTED", "TOOK", "BYTES", "ERROR"), lines)
