"""drill: prove a source restores. Restore its newest archives (and, rotating through the
history, older ones) into throwaway targets on the backup host, check them against the
facts recorded at backup time, time it (RTO), record a verdict, clean up.

Databases go into a scratch server backupd starts itself (backupd/actions/scratch.py); dump files
and trees into a private temporary directory. Every drill row is written before anything
starts and completed after; the scratch directory is named in the row so a crash can be
cleaned up at the next start (reconcile).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from backupd.actions.context import Context
from backupd.actions.db_stream import restore_archive
from backupd.actions.needs import Endpoint, provide, refuse_lacking
from backupd.actions.recorded import Ending, settle
from backupd.actions.restore import await_repositories, choose_archives, read_back, restore_tree
from backupd.actions.scratch import Scratch, new_scratch_dir, scratch_server
from backupd.actions.tree import TREE_FILENAME
from backupd.catalogue import Archive, Check
from backupd.catalogue.models import DrillStatus
from backupd.config.load import HostConfig, SourceConfig
from backupd.errors import BackupdError, NotFoundError, StoppedError, VerificationError
from backupd.remote.shells import LocalShell
from jobs.base import DatabaseRestore
from jobs.registry import database_kinds

log = logging.getLogger(__name__)


@dataclass
class DrillResult:
    host: str
    source: str
    archive: str
    drill_id: int
    verdict: DrillStatus
    rto_seconds: float
    checks: list[Check] = field(default_factory=list)
    detail: str | None = None


def archives_to_drill(ctx: Context, host: str, source: str, older: int) -> list[Archive]:
    """The newest good backup (every item), then per item up to ``older`` older archives:
    never drilled first, then the longest ago verified."""
    newest = ctx.catalogue.newest_good_set(host, source)
    if not newest:
        raise NotFoundError(f"{host}/{source}: no successful backup to drill yet")
    chosen = {a.name for a in newest}
    live = [
        a
        for a in ctx.catalogue.archives(host, source)
        if a.pruned_at is None and a.name not in chosen and a.run_id is not None
    ]
    picked: list[Archive] = []
    for item in dict.fromkeys(a.item for a in newest):
        candidates = [a for a in live if a.item == item]
        candidates.sort(key=lambda a: (a.verified_at is not None, a.verified_at or a.created_at))
        picked += candidates[:older]
    return newest + picked


def drill_source(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    trigger: str,
    archive: str | None = None,
) -> list[DrillResult]:
    """Drill one source: one verdict per archive restored (all recorded)."""
    if archive is not None:
        chosen = choose_archives(ctx, host, source, archive)
    else:
        chosen = archives_to_drill(ctx, host.name, source.name, ctx.config.drills.older_archives)
    root = new_scratch_dir(ctx.config, f"drill-{host.name}-{source.name}")
    # every row names the scratch directory before a server starts: a crash is cleaned up
    ids = [
        ctx.catalogue.start_drill(host.name, source.name, a.repository, a.name, trigger, str(root))
        for a in chosen
    ]
    done: list[DrillResult] = []

    def rest(ending: Ending) -> None:
        _unfinished(ctx, host, source, ids[len(done) :], ending, begun=bool(done))

    try:
        with settle(None, rest) as ending:
            await_repositories(ctx, chosen)  # a foreign lock: the drill cannot start, say why
            with _server(ctx, source, root) as scratch:
                for a, drill_id in zip(chosen, ids, strict=True):
                    done.append(_drill_one(ctx, host, source, a, drill_id, root, scratch))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if ending.how == "stopped" and ending.exception is not None:
        raise ending.exception  # a shutdown: no verdict; the next drill runs them
    return done + [
        DrillResult(host.name, source.name, a.name, i, DrillStatus.FAIL, 0.0, [], ending.error)
        for a, i in list(zip(chosen, ids, strict=True))[len(done) :]
    ]


def drill_copy(
    ctx: Context, host: HostConfig, source: SourceConfig, chosen: list[Archive]
) -> list[tuple[Archive, list[Check]]]:
    """Restore and check ``chosen`` (archives of a copy of the repository: ``repository``
    says where, ``ctx.borg`` opens it) as a drill does, for the off-site drill: no drill
    rows, nothing marked verified (the local drills' verdicts stay theirs). Each archive's
    checks; VerificationError (or another BackupdError) at the first that fails."""
    root = new_scratch_dir(ctx.config, f"offsite-drill-{host.name}-{source.name}")
    try:
        with _server(ctx, source, root) as scratch:
            return [
                (a, _restore_and_check(ctx, host, source, a, root / f"files-{n}", scratch, n))
                for n, a in enumerate(chosen, start=1)
            ]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _unfinished(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    ids: list[int],
    ending: Ending,
    *,
    begun: bool,
) -> None:
    """Complete the rows of archives not drilled: a stop -> interrupted, no alert; the
    scratch server or a lock in the way (or a bug) -> fail, alerted."""
    stopped = ending.how == "stopped"
    what = "drill stopped" if stopped else f"drill could not {'finish' if begun else 'start'}"
    ending.error = detail = f"{host.name}/{source.name}: {what}: {ending.error}"
    status = DrillStatus.INTERRUPTED if stopped else DrillStatus.FAIL
    for drill_id in ids:
        ctx.catalogue.finish_drill(drill_id, status, rto_seconds=None, detail=detail)
    if stopped:
        log.warning("%s", detail)
        return
    log.error("%s", detail)
    ctx.catalogue.record_alert("drill_failed", detail, host=host.name, source=source.name)


@contextmanager
def _server(ctx: Context, source: SourceConfig, root: Path) -> Iterator[Scratch | None]:
    if source.kind not in database_kinds():
        yield None
        return
    with scratch_server(ctx.config, source.kind, root) as scratch:
        yield scratch


def _drill_one(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    a: Archive,
    drill_id: int,
    root: Path,
    scratch: Scratch | None,
) -> DrillResult:
    started = time.monotonic()
    checks: list[Check] = []
    label = f"{host.name}/{source.name}: drill of {a.name} failed"

    def failed(ending: Ending) -> None:
        if ending.how == "stopped":
            return  # not a verdict on the archive: drill_source records it interrupted
        rto = time.monotonic() - started
        detail = ending.error
        ctx.catalogue.finish_drill(
            drill_id, DrillStatus.FAIL, rto_seconds=rto, checks=checks, detail=detail
        )
        ctx.catalogue.record_alert("drill_failed", str(detail), host=host.name, source=source.name)
        log.error("%s", detail)

    with settle(label, failed) as ending:
        checks = _restore_and_check(
            ctx, host, source, a, root / f"files-{drill_id}", scratch, drill_id
        )
    if ending.how == "stopped" and ending.exception is not None:
        raise ending.exception
    if not ending.ok:
        rto = time.monotonic() - started
        return DrillResult(
            host.name, source.name, a.name, drill_id, DrillStatus.FAIL, rto, checks, ending.error
        )
    rto = time.monotonic() - started
    warned = [c for c in checks if c.warn]
    verdict = DrillStatus.WARN if warned else DrillStatus.PASS
    note = "; ".join(c.detail for c in warned) or None
    ctx.catalogue.finish_drill(
        drill_id, verdict, rto_seconds=rto, nbytes=a.nbytes, checks=checks, detail=note
    )
    ctx.catalogue.mark_verified(a.repository, [a.name])
    log.info("%s/%s: drill of %s: %s in %.1fs", host.name, source.name, a.name, verdict, rto)
    return DrillResult(host.name, source.name, a.name, drill_id, verdict, rto, checks, note)


def _restore_and_check(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    a: Archive,
    files: Path,
    scratch: Scratch | None,
    drill_id: int,
) -> list[Check]:
    if a.filename == TREE_FILENAME:
        restore_tree(ctx, a, files, force=False)  # every file checked against the manifest
        files_seen = a.facts.get("files", "?")
        checks = [
            Check("files", f"{files_seen} file(s), {a.nbytes} bytes, every sha256 as recorded")
        ]
        if unread := a.facts.get("unreadable_count"):  # decision 0015: left out, reported
            left = f"{unread} path(s) could not be read at backup time and are not in this archive"
            checks.append(Check("unreadable", left, warn=True))
        return checks + _path_checks(source, files)
    kind = database_kinds().get(source.kind)
    if scratch is None or kind is None or not kind.restorable(a.item):
        return [_stream_check(ctx, a)]
    ep = Endpoint(kind, scratch.options, f"scratch {source.kind}")
    shell = LocalShell(scratch.root)
    database = f"drill_{drill_id}"
    # as onto a fresh server: what the dump needs from outside first (roles from the
    # globals), then the dump with its owners and privileges (decision 0016)
    req = DatabaseRestore(database, keep_owners=True, facts=a.facts)
    refuse_lacking(ep, shell, a, req, True, f"{host.name}/{source.name}")
    made = provide(ctx, host.name, source.name, ep, shell, a, req)
    _nbytes, checks = restore_archive(ctx, ep, shell, a, req)
    checks = made + checks
    recorded = set(a.facts.get("rows", {}))
    if recorded:  # the row check found every recorded table; nothing more may be there
        extra = sorted(ep.kind.tables(ep.options, shell, database) - recorded)
        if extra:
            raise VerificationError(
                f"the restored database has table(s) the backup did not "
                f"record: {', '.join(extra[:5])}"
            )
        checks.append(Check("tables", f"the same {len(recorded)} table(s) as recorded"))
        checks.append(_table_path(ctx, ep, shell, a, drill_id, sorted(recorded)))
    if not a.facts.get("rows"):
        checks.append(Check("rows", "no row counts were recorded at backup time", warn=True))
    return checks + _sql_checks(ep, shell, source, database)


def _table_path(
    ctx: Context,
    ep: Endpoint,
    shell: LocalShell,
    a: Archive,
    drill_id: int,
    tables: list[str],
) -> Check:
    """``restore --table`` proven on one table per drill (rotating with the drill's id):
    the table with what it needs, alone in a database of its own, its rows checked. A
    table that path cannot restore is a warning naming it: the backup itself is good."""
    table = tables[drill_id % len(tables)]
    req = DatabaseRestore(f"drill_{drill_id}_t", table=table, keep_owners=True, facts=a.facts)
    try:
        _nbytes, checks = restore_archive(ctx, ep, shell, a, req)
    except StoppedError:
        raise
    except BackupdError as e:
        detail = f"restore --table {table} would fail: {e}"
        return Check("table path", detail, warn=True)
    rows = next((c.detail for c in checks if c.check == "rows"), "restored")
    return Check("table path", f"restore --table {table}: {rows}")


def _stream_check(ctx: Context, a: Archive) -> Check:
    """A dump that is not restored into a server (globals, a SQLite copy): read it back
    in full and compare its sha256 and size."""
    tally = read_back(ctx, a)
    if (wrong := tally.differs(a)) is not None:
        raise VerificationError(f"{a.name}: read back, it does not match the catalogue {wrong}")
    return Check("sha256", f"{tally.nbytes} bytes read back as recorded")


def _sql_checks(
    ep: Endpoint, shell: LocalShell, source: SourceConfig, database: str
) -> list[Check]:
    checks = []
    for check in source.drill_sql:
        got = ep.kind.query(ep.options, shell, database, check.sql).strip().splitlines()
        first = got[0].strip() if got else ""
        if first != check.expect:
            raise VerificationError(
                f"drill_sql {check.sql!r} gave {first!r}, expected {check.expect!r}"
            )
        checks.append(Check("sql", f"{check.sql} = {first}"))
    return checks


def _path_checks(source: SourceConfig, root: Path) -> list[Check]:
    missing = [p for p in source.drill_paths if not (root / p.lstrip("/")).exists()]
    if missing:
        raise VerificationError(f"restored tree lacks {', '.join(missing)} (drill_paths)")
    if not source.drill_paths:
        return []
    return [Check("paths", f"{len(source.drill_paths)} required path(s) present")]
