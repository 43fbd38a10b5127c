"""backup: pull every unit of a source into Borg, fail-safe, recorded in the catalogue.

Order matters for safety: the run row is written first; the droplet is reached (host
key checked) before anything touches the store; each dump stream goes through
``borg create --content-from-command`` so a failed dump never becomes an archive.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from backupd.actions.changes import judge_night
from backupd.actions.context import Context, connect
from backupd.actions.recorded import Ending, settle, with_tail
from backupd.actions.stream import Pulled, PullRun, archive_name, pull_stream
from backupd.actions.sweep import mark_clean, mark_dirty, sweep_owed
from backupd.actions.tree import pull_tree
from backupd.borg.adapter import LOCK_WAIT_SECONDS
from backupd.catalogue import RunStatus
from backupd.config.load import HostConfig, SourceConfig
from backupd.errors import DumpError, HostKeyError, ItemsFailed
from backupd.notify.ping import ping_end, ping_start
from jobs.base import DumpStream, TreeTransfer
from jobs.registry import registry

if TYPE_CHECKING:
    from backupd.remote.ssh import Connection

__all__ = ["BackupOutcome", "archive_name", "backup_source"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackupOutcome:
    host: str
    source: str
    run_id: int
    status: RunStatus
    archives: list[str] = field(default_factory=list)
    nbytes: int = 0
    error: str | None = None
    transient: bool = False  # trying again later may help (the daemon retries)
    changes: tuple[str, ...] = ()  # change alerts the night raised (decision 0024), a line each
    exit_code: int = 0  # a failure's (BackupdError.exit_code: backupctl's, the ping's)

    @property
    def ok(self) -> bool:
        return self.status in (RunStatus.SUCCEEDED, RunStatus.WARNING)


def backup_source(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    trigger: str,
    progress: Callable[[str], object] | None = None,
    retries_left: int = 0,
) -> BackupOutcome:
    """``progress`` hears one line per step (connected, planned, each unit pulled). The
    source's ping URL hears the outcome (a dead-man's switch outside backupd). A transient
    failure with ``retries_left`` is recorded but not alerted: the retry may succeed."""
    ping_start(source.ping_url)
    with ctx.borg.job(f"the backup of {host.name}/{source.name}"):
        outcome = _backup_source(ctx, host, source, trigger, progress, retries_left)
    if outcome.status != RunStatus.INTERRUPTED:  # a stop: the catch-up run ends it
        ping_end(source.ping_url, 0 if outcome.ok else outcome.exit_code)
    return outcome


@dataclass
class Night:
    """What one run of a source got: each archived item is a good restore point of its own."""

    archives: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)  # items
    failed: list[str] = field(default_factory=list)  # "item: why"
    warnings: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    total: int = 0

    def outcome(
        self,
        host: HostConfig,
        source: SourceConfig,
        run_id: int,
        status: RunStatus,
        error: str | None = None,
        transient: bool = False,
        exit_code: int = 0,
    ) -> BackupOutcome:
        return BackupOutcome(
            host.name,
            source.name,
            run_id,
            status,
            self.archives,
            self.total,
            error,
            transient,
            tuple(self.changes),
            exit_code,
        )


def _pull_item(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    run: PullRun,
    n: int,
    unit: DumpStream | TreeTransfer,
    repo: Path,
    conn: Connection,
    night: Night,
) -> Pulled | None:
    """Pull one item. A failure of the item alone (its dump failed, it was dropped since
    the plan) is noted and the night goes on with the next item; a failure the next items
    would meet too (a lost link, a stall, the store) ends the run."""
    try:
        pulled = _pull(ctx, host, source, run, n, unit, repo, conn)
    except DumpError as e:
        if e.transient or len(run.plan) == 1:
            raise
        if registry()[source.kind].vanished(source.options, unit, conn):
            run.gone.append(unit.item)
            night.warnings.append(
                f"{unit.item}: gone from the droplet since the night's plan "
                "(dropped or removed): not in this backup"
            )
        else:
            night.failed.append(with_tail(e))  # its message names the item already
        return None
    night.archived.append(unit.item)
    night.archives.append(pulled.archive)
    night.total += pulled.nbytes
    night.warnings += pulled.warnings
    return pulled


def _pull(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    run: PullRun,
    n: int,
    unit: DumpStream | TreeTransfer,
    repo: Path,
    conn: Connection,
) -> Pulled:
    if isinstance(unit, DumpStream):
        with registry()[source.kind].hold(source.options, unit, conn) as held:
            return pull_stream(ctx, host, source, run, n, unit, repo, held, conn)
    return pull_tree(ctx, host, source, run, unit, repo, conn)


def _backup_source(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    trigger: str,
    progress: Callable[[str], object] | None,
    retries_left: int,
) -> BackupOutcome:
    say = progress or (lambda line: None)
    cat = ctx.catalogue
    source_id = cat.ensure_source(host.name, host.address, source.name, source.kind)
    sweep_owed(ctx, host.name)  # what an earlier failed or killed run left in the repository
    run_id = cat.start_run(source_id, trigger)
    label = f"{host.name}/{source.name}"
    log.info("%s: backup started (run %d)", label, run_id)
    night = Night()

    def finish(end: Ending) -> None:
        cat.finish_run(
            run_id, end.run_status, nbytes=night.total, error=end.error, stderr_tail=end.stderr_tail
        )

    with settle(label, finish) as ending:
        _pull_night(ctx, host, source, (source_id, run_id), night, say)
    if ending.how == "stopped":  # a shutdown, not a fault: no alert; the catch-up reruns it
        log.warning("%s", ending.error)
        return night.outcome(
            host, source, run_id, RunStatus.INTERRUPTED, ending.error, transient=True
        )
    if not ending.ok:
        assert ending.error is not None
        alert = (
            "host_key_changed" if isinstance(ending.exception, HostKeyError) else "backup_failed"
        )
        if ending.transient and retries_left > 0:
            log.warning("%s (transient: %d retries left, no alert yet)", ending.error, retries_left)
        else:
            cat.record_alert(alert, ending.error, host=host.name, source=source.name, run_id=run_id)
        code = getattr(ending.exception, "exit_code", 1)  # a crash: 1
        return night.outcome(
            host, source, run_id, RunStatus.FAILED, ending.error, ending.transient, code
        )
    mark_clean(ctx, host.name, run_id)
    if night.warnings:
        message = f"{label}: " + "; ".join(night.warnings)
        cat.finish_run(run_id, RunStatus.WARNING, nbytes=night.total, error=message)
        cat.record_alert(
            "backup_warning", message, host=host.name, source=source.name, run_id=run_id
        )
        log.warning("%s", message)
        return night.outcome(host, source, run_id, RunStatus.WARNING, message)
    cat.finish_run(run_id, RunStatus.SUCCEEDED, nbytes=night.total)
    log.info(
        "%s: backup succeeded: %d archive(s), %d bytes", label, len(night.archives), night.total
    )
    return night.outcome(host, source, run_id, RunStatus.SUCCEEDED)


def _pull_night(
    ctx: Context,
    host: HostConfig,
    source: SourceConfig,
    ids: tuple[int, int],
    night: Night,
    say: Callable[[str], object],
) -> None:
    """Plan the source's items on the droplet and pull each into its archive; ItemsFailed
    when an item failed or nothing was archived."""
    label = f"{host.name}/{source.name}"
    source_id, run_id = ids  # the source's and the run's rows
    kind = registry()[source.kind]
    with connect(ctx, host) as conn:
        units = kind.plan(source.options, conn)
        if not units:
            raise DumpError(f"{source.kind} source found nothing to back up")
        say(f"{label}: {len(units)} item(s) to pull: {', '.join(u.item for u in units)}")
        run = PullRun(source_id, run_id, tuple(u.item for u in units))
        repo = ctx.repository(host.name)
        mark_dirty(ctx, host.name, run_id)  # swept unless this run ends well
        if ctx.borg.ensure_repository(repo, ctx.config.store.encryption):
            log.info("%s: initialised Borg repository %s", label, repo)
        # before any dump or rsync: a lock held by someone else fails now, not in 10 min
        ctx.borg.locks.await_free(repo, exclusive=True, wait=LOCK_WAIT_SECONDS)
        for n, unit in enumerate(units):
            say(f"{label}: [{n + 1}/{len(units)}] pulling {unit.item} ...")
            started = time.monotonic()
            pulled = _pull_item(ctx, host, source, run, n, unit, repo, conn, night)
            if pulled is not None:
                say(
                    f"{label}: [{n + 1}/{len(units)}] {unit.item}: {pulled.nbytes} bytes "
                    f"in {time.monotonic() - started:.1f}s -> {pulled.archive}"
                )
        night.changes = judge_night(ctx, run_id)  # before a failed item's error is raised
        if night.failed or not night.archived:
            raise ItemsFailed(
                night.failed + ([] if night.archived else night.warnings), night.archived
            )
