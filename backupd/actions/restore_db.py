"""restore into a database: where (a restore target on the backup host, or a droplet's
own server; a gated droplet's through its restore key, as its restore role), which
archives, under which names; the plan refuses what a real restore would refuse, before
anything changes. Every restore is recorded in the catalogue before anything is touched,
and completed after; the stream itself is backupd/actions/db_stream.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from backupd.actions.context import Context, connect
from backupd.actions.db_stream import restore_archive
from backupd.actions.gatelist import restore_writer
from backupd.actions.needs import Endpoint, provide, refuse_lacking
from backupd.actions.recorded import Ending, settle
from backupd.actions.restore import Progress, await_repositories, choose_archives
from backupd.catalogue import Archive, Check, RunStatus
from backupd.config.load import HostConfig, SourceConfig
from backupd.errors import RefusedError, UsageError
from backupd.remote.shells import CommandShell, DropletShell, LocalShell
from jobs.base import DatabaseKind, DatabaseRestore, Lack
from jobs.registry import database_kinds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntoTarget:
    """``--into-db NAME``: the configured ``[restore_targets.NAME]`` server (run from the
    backup host)."""

    name: str


@dataclass(frozen=True)
class OntoDroplet:
    """``--to-host HOST --database``: that droplet's own server, its tools run as the
    source says (sudo, container)."""

    host: str


DbTarget = IntoTarget | OntoDroplet


@dataclass(frozen=True)
class DbRequest:
    """Where (``target``), which point, under which name, one table or all, may it
    replace."""

    target: DbTarget
    name: str | None = None  # --as / --database; default: the name it had
    table: str | None = None
    item: str | None = None  # which database of a source that dumps several
    archive: str | None = None
    at: datetime | None = None
    force: bool = False
    create_roles: bool = False  # create the roles the target lacks; keep owners, privileges


@dataclass(frozen=True)
class PlannedDb:
    archive: Archive
    restore: DatabaseRestore
    exists: bool
    creates: tuple[Lack, ...] = ()  # what the target lacks and is created first

    @property
    def action(self) -> str:
        first = f"create {', '.join(x.what for x in self.creates)}, then " if self.creates else ""
        if self.restore.table is not None:
            verb = "replace table" if self.restore.replace else "restore table"
            return f"{first}{verb} {self.restore.table} in {self.restore.database}"
        return f"{first}{'replace' if self.exists else 'create'} database {self.restore.database}"


@dataclass(frozen=True)
class DbPlan:
    endpoint: Endpoint
    databases: list[PlannedDb]
    skipped: list[str] = field(default_factory=list)  # items that are not databases
    destructive: bool = False  # something existing gets dropped or overwritten

    @property
    def where(self) -> str:  # "restore target staging" / "droplet web2"
        return self.endpoint.where


@dataclass(frozen=True)
class DbRestored:
    archive: str
    database: str
    where: str
    nbytes: int
    seconds: float
    checks: list[Check]


def database_kind(source: SourceConfig) -> DatabaseKind[Any]:
    kind = database_kinds().get(source.kind)
    if kind is None:
        raise UsageError(
            f"{source.host}/{source.name} is a {source.kind} source: it does not "
            "restore into a database server; use --to DIR"
        )
    return kind


@contextmanager
def db_shell(ctx: Context, req: DbRequest) -> Iterator[CommandShell]:
    if not isinstance(req.target, OntoDroplet):
        yield LocalShell(ctx.run_dir())
        return
    host = _droplet(ctx, req.target)
    if host.gate:  # the daemon's key cannot write there: the operator's restore key
        host = restore_writer(host)
    with connect(ctx, host) as conn:
        yield DropletShell(conn)


def _droplet(ctx: Context, target: OntoDroplet) -> HostConfig:
    host = ctx.config.hosts.get(target.host)
    if host is None:
        raise UsageError(
            f"unknown host {target.host!r} (configured: {', '.join(sorted(ctx.config.hosts))})"
        )
    return host


def _gated_endpoint(host: HostConfig, source: SourceConfig, req: DbRequest) -> Endpoint:
    """A gated droplet's server, as its restore key's allowlist knows it: through its own
    source of this kind (the one of the same name, or its only one), as its restore role."""
    mine = [s for s in host.sources.values() if s.kind == source.kind]
    same = [s for s in mine if s.name == source.name] or mine
    if len(same) != 1:
        raise UsageError(
            f"{host.name} is gated: a {source.kind} restore goes through one of its own "
            f"{source.kind} sources, and it has {len(mine)} (name one like {source.name})"
        )
    if req.create_roles:
        raise UsageError(
            f"{host.name} is gated: its restore role cannot create roles; create them as "
            "the server's superuser first (globals.sql, see docs/restore-runbook.md)"
        )
    kind = database_kind(source)
    gate = kind.restore_gate(same[0].options, same[0].name)
    return Endpoint(kind, gate.options, f"droplet {host.name}")


def _endpoint(ctx: Context, source: SourceConfig, req: DbRequest) -> Endpoint:
    kind = database_kind(source)
    if isinstance(req.target, OntoDroplet):  # the tools run as the source says (sudo...)
        host = _droplet(ctx, req.target)
        if host.gate:
            return _gated_endpoint(host, source, req)
        return Endpoint(kind, source.options, f"droplet {req.target.host}")
    name = req.target.name
    target = ctx.config.restore_targets.get(name)
    if target is None:
        known = ", ".join(sorted(ctx.config.restore_targets)) or "none configured"
        raise UsageError(
            f"unknown restore target {name!r} ({known}); declare it as "
            f"[restore_targets.{name}] in the config"
        )
    if target.kind != source.kind:
        raise UsageError(
            f"restore target {name} is a {target.kind} server; "
            f"{source.host}/{source.name} is a {source.kind} source"
        )
    return Endpoint(kind, target.options, f"restore target {name}")


def plan_db_restore(
    ctx: Context, host: HostConfig, source: SourceConfig, req: DbRequest, shell: CommandShell
) -> DbPlan:
    """What would be restored where; refuses what a real restore would refuse. Asks the
    server which databases exist, changes nothing (``--dry-run`` stops here)."""
    ep = _endpoint(ctx, source, req)
    chosen = choose_archives(ctx, host, source, req.archive, req.at, req.item)
    if req.item is not None:
        chosen = [a for a in chosen if a.item == req.item]
        if not chosen:
            raise UsageError(
                f"{host.name}/{source.name}: no database {req.item!r} in that "
                "backup (see: backupctl archives)"
            )
    databases = [a for a in chosen if ep.kind.restorable(a.item)]
    skipped = [a.name for a in chosen if not ep.kind.restorable(a.item)]
    if not databases:
        raise UsageError(f"{host.name}/{source.name}: that backup holds no database")
    if len(databases) > 1 and (req.name or req.table):
        items = ", ".join(a.item for a in databases)
        raise UsageError(
            f"this backup holds several databases ({items}): choose one with "
            "--item before --as/--database or --table"
        )
    planned = []
    for a in databases:
        recorded = list(a.facts.get("rows", {}))
        table = ep.kind.resolve_table(req.table, recorded) if req.table else None
        name = req.name or a.item
        exists = ep.kind.database_exists(ep.options, shell, name)
        if exists and not req.force:
            what = f"table {table} in it" if table else "it"
            rename = "--database" if isinstance(req.target, OntoDroplet) else "--as"
            raise RefusedError(
                f"database {name!r} already exists on {ep.where}: refusing to touch it "
                f"(use {rename} NEWNAME, or --force to replace {what})"
            )
        restore = DatabaseRestore(
            name,
            table,
            keep_owners=isinstance(req.target, OntoDroplet) or req.create_roles,
            replace=exists,
            facts=a.facts,
        )
        creates = refuse_lacking(
            ep, shell, a, restore, req.create_roles, f"{host.name}/{source.name}"
        )
        planned.append(PlannedDb(a, restore, exists, creates))
    return DbPlan(ep, planned, skipped, destructive=any(p.exists for p in planned))


def restore_into_db(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    req: DbRequest,
    confirm: Callable[[DbPlan], bool] = lambda plan: True,
    progress: Progress | None = None,
) -> list[DbRestored]:
    """Plan, ask (``confirm`` sees the plan), then restore each database and check it."""
    with db_shell(ctx, req) as shell:
        plan = plan_db_restore(ctx, host, source, req, shell)
        if not confirm(plan):
            raise RefusedError("not confirmed: nothing was changed")
        ep = plan.endpoint
        return [_restore_one(ctx, host, source, ep, shell, p, progress) for p in plan.databases]


def _restore_one(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    ep: Endpoint,
    shell: CommandShell,
    planned: PlannedDb,
    progress: Progress | None,
) -> DbRestored:
    a, req = planned.archive, planned.restore
    where = f"{req.database} on {ep.where}"
    rid = ctx.catalogue.start_restore(
        host.name,
        source.name,
        [a.name],
        "host-db" if ep.where.startswith("droplet") else "database",
        where,
    )
    started = time.monotonic()

    def finish(end: Ending) -> None:
        seconds = time.monotonic() - started
        ctx.catalogue.finish_restore(rid, end.run_status, error=end.error, seconds=seconds)

    with settle(None, finish, reraise=True):
        await_repositories(ctx, [a])  # a lock held by someone else: before the database exists
        made = provide(ctx, host.name, source.name, ep, shell, a, req) if planned.creates else []
        nbytes, checks = restore_archive(ctx, ep, shell, a, req, progress)
        checks = made + checks
    seconds = time.monotonic() - started
    ctx.catalogue.finish_restore(
        rid, RunStatus.SUCCEEDED, nbytes=nbytes, seconds=seconds, checks=checks
    )
    log.info("restored %s into %s in %.1fs", a.name, where, seconds)
    return DbRestored(a.name, req.database, ep.where, nbytes, seconds, checks)
