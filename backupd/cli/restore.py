"""backupctl restore: what ops run when something has gone wrong. Parses and checks the
options, shows the plan, asks before anything destructive, hands off to the actions."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from backupd.actions.context import Context
from backupd.actions.restore import DirRequest, plan_restore_to_dir, restore_files
from backupd.actions.restore_db import (
    DbPlan,
    DbRequest,
    IntoTarget,
    OntoDroplet,
    db_shell,
    plan_db_restore,
    restore_into_db,
)
from backupd.actions.restore_push import PushPlan, PushRequest, plan_push, restore_to_host_path
from backupd.actions.tree import TREE_FILENAME
from backupd.cli.common import clean_errors, context, parse_at, short_time
from backupd.config.load import HostConfig, SourceConfig
from backupd.errors import RefusedError


@dataclass
class Where:
    """The one destination the operator chose, checked for consistency."""

    to: Path | None
    into_db: str | None
    to_host: str | None
    path: str | None
    database: str | None
    as_name: str | None
    table: str | None

    def check(self) -> None:
        chosen = [
            o
            for o, v in (
                ("--to", self.to),
                ("--into-db", self.into_db),
                ("--to-host", self.to_host),
            )
            if v is not None
        ]
        if len(chosen) != 1:
            raise click.UsageError(
                "say where to restore: exactly one of --to DIR, --into-db TARGET or --to-host HOST"
            )
        if self.to_host is not None and (self.path is None) == (self.database is None):
            raise click.UsageError("with --to-host, give exactly one of --path P or --database D")
        if self.to_host is None and (self.path or self.database):
            raise click.UsageError("--path and --database go with --to-host")
        if self.as_name is not None and self.into_db is None:
            raise click.UsageError("--as goes with --into-db (on a droplet: --database NAME)")
        if self.table is not None and self.into_db is None and self.database is None:
            raise click.UsageError("--table goes with --into-db or --to-host --database")


class ByteProgress:
    """A progress bar on stderr over the bytes restored (only on a terminal)."""

    def __init__(self) -> None:
        self._bar: Any = None
        self.total = 0

    def __call__(self, n: int) -> None:
        if self._bar is None and self.total and sys.stderr.isatty():
            self._bar = click.progressbar(
                length=self.total,
                label="restoring",
                file=sys.stderr,
                show_pos=False,
                show_percent=True,
                show_eta=True,
            )
            self._bar.__enter__()
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def confirm(lines: list[str], risk: str | None, yes: bool) -> bool:
    """Show the plan; ask before a risky restore unless --yes (never hang without a TTY).
    ``risk`` completes "this restore ..." (None: nothing to ask)."""
    for line in lines:
        click.echo(line)
    if risk is None or yes:
        return True
    if not sys.stdin.isatty():
        raise RefusedError(
            f"this restore {risk} and needs a confirmation: run it in a terminal, or add --yes"
        )
    return click.confirm("Go ahead?", default=False, err=True)


def db_plan_lines(plan: DbPlan) -> list[str]:
    lines = [
        f"{p.action} on {plan.where} from {p.archive.name} ({p.archive.nbytes} bytes)"
        for p in plan.databases
    ]
    lines += [
        f"skipping {name}: not a database (restore it with --to DIR)" for name in plan.skipped
    ]
    return lines


def db_risk(plan: DbPlan, req: DbRequest) -> str | None:
    if plan.destructive:
        return f"replaces existing data on {plan.where}"
    if isinstance(req.target, OntoDroplet):
        return f"writes onto {plan.where}"
    return None


def push_plan_lines(plan: PushPlan) -> list[str]:
    lines = [f"push {a.name} ({a.nbytes} bytes) to {plan.where}" for a in plan.archives]
    if plan.not_empty:
        lines.append(f"WARNING: {plan.where} is not empty: files there will be overwritten")
    return lines


@click.command()
@click.argument("target", metavar="HOST/SOURCE")
@click.option(
    "--to",
    "to",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory on this host to write the dump file(s) or the tree into.",
)
@click.option(
    "--into-db",
    "into_db",
    metavar="TARGET",
    help="Restore into a database server on this host ([restore_targets.TARGET]).",
)
@click.option(
    "--to-host",
    "to_host",
    metavar="HOST",
    help="Push back onto a droplet (the same or another) over SSH.",
)
@click.option("--path", "path", metavar="P", help="With --to-host: a directory there.")
@click.option(
    "--database",
    "database",
    metavar="NAME",
    help="With --to-host: restore into this database on the droplet.",
)
@click.option(
    "--as",
    "as_name",
    metavar="NEWNAME",
    help="With --into-db: the database's name (default: the name it had).",
)
@click.option("--table", metavar="TABLE", help="Only this table (SCHEMA.TABLE for PostgreSQL).")
@click.option("--item", metavar="ITEM", help="One database of a source that dumps several.")
@click.option(
    "--create-roles",
    is_flag=True,
    help="Create the roles the database needs that the server lacks (NOLOGIN, no password; "
    "from the backup's globals) and keep owners and privileges (PostgreSQL).",
)
@click.option("--archive", help="Restore this archive (see: backupctl archives).")
@click.option(
    "--at",
    "at",
    metavar="TIME",
    callback=parse_at,
    help='The newest good backup at or before TIME, e.g. "2026-11-20 03:00" (UTC).',
)
@click.option(
    "--include",
    "include",
    metavar="PATH",
    multiple=True,
    help="Only this file or subtree of a tree (as find and ls show it); repeatable.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--force", is_flag=True, help="Replace what is already there.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before replacing or pushing.")
@click.pass_obj
@clean_errors
def restore(
    obj: dict[str, Any],
    target: str,
    to: Path | None,
    into_db: str | None,
    to_host: str | None,
    path: str | None,
    database: str | None,
    as_name: str | None,
    table: str | None,
    item: str | None,
    create_roles: bool,
    archive: str | None,
    at: datetime | None,
    include: tuple[str, ...],
    dry_run: bool,
    force: bool,
    yes: bool,
) -> None:
    """Restore the newest good backup of a source (or --at TIME, or --archive NAME).

    Where to: --to DIR (the files, or the dump file), --into-db TARGET (a database server
    on this host, streamed into pg_restore / mariadb, no temporary file) or --to-host HOST
    with --path P or --database NAME (pushed back onto a droplet over SSH). The data is
    checked against what was recorded at backup time (sha256, file manifest, row counts)
    and the restore is recorded in the catalogue. Nothing existing is replaced without
    --force, and replacing or pushing to a droplet asks first (--yes to skip).

    \b
    Examples:
      backupctl restore web1/maindb --to /srv/restore --dry-run
      backupctl restore web1/maindb --to /srv/restore --at "2026-11-20 03:00"
      backupctl restore web1/maindb --into-db staging --as app_yesterday
      backupctl restore web1/maindb --into-db staging --as app_users --table public.users
      backupctl restore web1/shopdb --to-host web2 --database shop --force
      backupctl restore web1/uploads --to-host web1 --path /srv/uploads-restored
      backupctl restore web1/uploads --to /tmp/r --include courses/42/img --at "2026-11-26"
    """
    if archive and at:
        raise click.UsageError("give --archive or --at, not both")
    where = Where(to, into_db, to_host, path, database, as_name, table)
    where.check()
    if include and to is None and path is None:
        raise click.UsageError("--include goes with --to DIR or --to-host HOST --path P")
    if create_roles and into_db is None and database is None:
        raise click.UsageError("--create-roles goes with --into-db or --to-host --database")
    ctx = context(obj)
    host, source = ctx.lookup_one(target)
    progress = ByteProgress()
    ctx.borg.doing = f"a restore of {host.name}/{source.name}"  # what a waiting backup says
    ctx.borg.on_wait = say_waiting  # a backup of ours holding the lock: say that we wait
    try:
        if to is not None:
            req_dir = DirRequest(to, archive, at, force, include)
            _to_dir(ctx, host, source, req_dir, dry_run, progress)
        elif path is not None and to_host is not None:
            _to_host_path(
                ctx,
                host,
                source,
                PushRequest(to_host, path, archive, at, force, include),
                dry_run,
                yes,
            )
        else:
            req = DbRequest(
                OntoDroplet(to_host) if to_host is not None else IntoTarget(str(into_db)),
                name=as_name or database,
                table=table,
                item=item,
                archive=archive,
                at=at,
                force=force,
                create_roles=create_roles,
            )
            _to_db(ctx, host, source, req, dry_run, yes, progress)
    finally:
        progress.close()


def say_waiting(line: str) -> None:
    click.echo(f"backupctl: {line}", err=True)


def _to_dir(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    req: DirRequest,
    dry_run: bool,
    progress: ByteProgress,
) -> None:
    chosen = plan_restore_to_dir(ctx, host, source, req)
    if dry_run:
        for a in chosen:
            where = req.to if a.filename == TREE_FILENAME else req.to / a.filename
            what = f"only {', '.join(req.include)} of " if req.include else ""
            size = "" if req.include else f", {a.nbytes} bytes"
            click.echo(
                f"would restore {what}{a.name} ({short_time(a.created_at)}{size}) -> {where}"
            )
        click.echo("dry run: nothing was changed")
        return
    progress.total = sum(a.nbytes for a in chosen)
    for f in restore_files(ctx, host, source, req, progress):
        progress.close()
        check = f"sha256 {f.sha256}" if f.sha256 else "every file checked against the manifest"
        click.echo(f"{f.path}  {f.nbytes} bytes  {check}  (from {f.archive}, verified)")


def _to_db(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    req: DbRequest,
    dry_run: bool,
    yes: bool,
    progress: ByteProgress,
) -> None:
    if dry_run:
        with db_shell(ctx, req) as shell:
            plan = plan_db_restore(ctx, host, source, req, shell)
        for line in db_plan_lines(plan):
            click.echo(line if line.startswith("skipping") else f"would {line}")
        click.echo("dry run: nothing was changed")
        return

    def ask(plan: DbPlan) -> bool:
        progress.total = sum(p.archive.nbytes for p in plan.databases)
        return confirm(db_plan_lines(plan), db_risk(plan, req), yes)

    for r in restore_into_db(ctx, host, source, req, ask, progress):
        progress.close()
        click.echo(
            f"restored {r.archive} into database {r.database} on {r.where}: "
            f"{r.nbytes} bytes in {r.seconds:.1f}s"
        )
        for c in r.checks:
            click.echo(f"  ok  {c.check}: {c.detail}")


def _to_host_path(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    req: PushRequest,
    dry_run: bool,
    yes: bool,
) -> None:
    if dry_run:
        for line in push_plan_lines(plan_push(ctx, host, source, req)):
            click.echo(f"would {line}")
        click.echo("dry run: nothing was changed")
        return
    pushed = restore_to_host_path(
        ctx,
        host,
        source,
        req,
        lambda plan: confirm(push_plan_lines(plan), f"writes onto droplet {req.host}", yes),
    )
    click.echo(
        f"restored {pushed.files} file(s), {pushed.nbytes} bytes to {pushed.where} "
        f"in {pushed.seconds:.1f}s"
    )
    for c in pushed.checks:
        click.echo(f"  ok  {c.check}: {c.detail}")
