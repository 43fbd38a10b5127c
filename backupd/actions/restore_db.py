"""restore into a database: stream ``borg extract --stdout`` into the kind's restore tool.

No temporary dump file: the archive's bytes are hashed as they pass (they must match the
sha256 recorded at backup time), optionally filtered (one table), and fed to pg_restore or
mariadb, on the backup host (a configured restore target) or on a droplet over SSH. The
restored database is then checked against the recorded row counts. Every restore is
recorded in the catalogue before anything is touched, and completed after.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from backupd.actions.context import Context, connect
from backupd.actions.gatelist import restore_key_file
from backupd.actions.needs import Endpoint, provide, refuse_lacking
from backupd.actions.recorded import Ending, settle
from backupd.actions.restore import (
    Progress,
    Tally,
    await_repositories,
    choose_archives,
    read_back,
)
from backupd.catalogue import Archive, Check, RunStatus
from backupd.config.load import HostConfig, SourceConfig
from backupd.errors import RefusedError, RestoreError, UsageError, VerificationError
from backupd.local.process import FeedResult
from backupd.remote.shells import CommandShell, DropletShell, LocalShell
from jobs.base import DatabaseKind, DatabaseRestore, Lack, LoadRewrite, Peek, RewritingKind
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
        host = host.model_copy(update={"key": restore_key_file(host)})
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
            raise RefusedError(
                f"database {name!r} already exists on {ep.where}: refusing to touch it "
                f"(use --as NEWNAME, or --force to replace {what})"
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


def restore_archive(
    ctx: Context,
    ep: Endpoint,
    shell: CommandShell,
    a: Archive,
    req: DatabaseRestore,
    progress: Progress | None = None,
) -> tuple[int, list[Check]]:
    """Create the database, stream the dump into it, check it: (bytes, checks passed)."""
    ep.kind.prepare_database(ep.options, shell, req)
    with ep.kind.restore_setup(ep.options, shell, req, _peek(ctx, shell, a)) as setup:
        nbytes, notes = _stream(ctx, ep, shell, a, req, progress, setup.extra_argv)
    rewritten = [Check("rewritten", note) for note in notes]
    return nbytes, verify_database(ep, shell, a, req) + list(setup.checks) + rewritten


def _peek(ctx: Context, shell: CommandShell, a: Archive) -> Peek:
    """Feed the archive's dump to a command that may stop reading early (a listing)."""

    def peek(argv: tuple[str, ...]) -> FeedResult:
        def produce(sink: Callable[[bytes], object]) -> None:
            ctx.borg.extract_stream(Path(a.repository), a.name, a.filename, sink)

        return shell.feed(argv, produce, timeout=RESTORE_TIMEOUT)

    return peek


def _stream(
    ctx: Context,
    ep: Endpoint,
    shell: CommandShell,
    a: Archive,
    req: DatabaseRestore,
    progress: Progress | None,
    extra_argv: tuple[str, ...] = (),
) -> tuple[int, list[str]]:
    tally = Tally()
    filt = ep.kind.stream_filter(req.table)
    rewrite = _load_rewrite(ep, shell, a, req)

    def produce(sink: Callable[[bytes], object]) -> None:
        def forward(chunk: bytes) -> None:
            tally(chunk)
            data = filt.feed(chunk) if filt else chunk
            sink(rewrite.feed(data) if rewrite else data)
            if progress:
                progress(len(chunk))

        ctx.borg.extract_stream(Path(a.repository), a.name, a.filename, forward)
        rest = filt.end() if filt else b""
        if rewrite:
            rest = rewrite.feed(rest) + rewrite.end()
        if rest:
            sink(rest)

    secret = ep.kind.restore_secret(ep.options)
    with _secret_file(shell, secret) as secret_path:
        argv = ep.kind.restore_argv(ep.options, req, secret_path) + extra_argv
        result = shell.feed(argv, produce, timeout=RESTORE_TIMEOUT)
    tool = Path(_tool_name(argv, ep)).name
    if result.timed_out:
        raise RestoreError(
            f"{tool} into {req.database} on {ep.where} still running after "
            f"{RESTORE_TIMEOUT:.0f}s: stopped; the database is incomplete"
        )
    if not result.ok and not _had_its_part(req, result):
        raise RestoreError(
            f"{tool} into {req.database} on {ep.where} failed (exit {result.exit_status}); "
            "the database is incomplete: drop it, or restore again with --force",
            stderr_tail=result.output_tail(),
        )
    if not result.complete:  # the tool had its table: the rest is read for the sha256
        tally = read_back(ctx, a)
    if (wrong := tally.differs(a)) is not None:
        raise VerificationError(f"{a.name}: the archived dump does not match the catalogue {wrong}")
    if filt is not None and not filt.matched:
        raise RestoreError(f"table {req.table} was not found in {a.name}")
    return tally.nbytes, rewrite.notes() if rewrite else []


def _had_its_part(req: DatabaseRestore, result: FeedResult) -> bool:
    """A tool asked for one table may stop reading once it has it and exit 0 (pg_restore
    --use-list on a stream: the large objects after the table are never read)."""
    return req.table is not None and result.exit_status == 0 and not result.timed_out


def _load_rewrite(
    ep: Endpoint, shell: CommandShell, a: Archive, req: DatabaseRestore
) -> LoadRewrite | None:
    """The kind's rewrite that makes this dump load here under ``req.database``."""
    if not isinstance(ep.kind, RewritingKind):
        return None
    tables = list(a.facts.get("rows", {}))
    return ep.kind.load_rewrite(ep.options, shell, a.item, tables, req)


RESTORE_TIMEOUT = 24 * 3600.0


def _tool_name(argv: tuple[str, ...], ep: Endpoint) -> str:
    prefix = len(ep.options.remote_prefix())
    return argv[prefix] if len(argv) > prefix else argv[0]


@contextmanager
def _secret_file(shell: CommandShell, secret: bytes) -> Iterator[str | None]:
    if not secret:
        yield None
        return
    with shell.private_file(secret) as path:
        yield path


def verify_database(
    ep: Endpoint, shell: CommandShell, a: Archive, req: DatabaseRestore
) -> list[Check]:
    """Row counts now in the database against those recorded at backup time, then the
    kind's own checks (PostgreSQL: encoding and locale, large objects)."""
    checks = [Check("sha256", f"{a.nbytes} bytes, sha256 {a.sha256[:12]}")]
    recorded: dict[str, int] = dict(a.facts.get("rows", {}))
    if req.table is not None:
        recorded = {k: v for k, v in recorded.items() if k == req.table}
    if not recorded:
        checks.append(Check("rows", "no row counts were recorded"))
        return checks + ep.kind.extra_checks(ep.options, shell, req)
    # tables of an engine without snapshots were not dumped at the counted moment: they
    # must be there, their rows are not compared (decision 0017)
    outside = set(a.facts.get("rows_outside_snapshot", ())) & set(recorded)
    found = ep.kind.row_counts(ep.options, shell, req.database, list(recorded))
    compared = {t: n for t, n in recorded.items() if t not in outside}
    wrong = [f"{t}: {found[t]} rows, recorded {n}" for t, n in compared.items() if found[t] != n]
    if wrong:
        raise VerificationError(
            f"{req.database} on {ep.where} differs from the backup in "
            f"{len(wrong)} table(s): {'; '.join(wrong[:5])}"
        )
    detail = f"{len(compared)} table(s), {sum(compared.values())} rows as recorded"
    if outside:
        detail += (
            f"; {len(outside)} table(s) present whose engine has no snapshot "
            f"(rows not compared): {', '.join(sorted(outside)[:5])}"
        )
    checks.append(Check("rows", detail))
    return checks + ep.kind.extra_checks(ep.options, shell, req)
