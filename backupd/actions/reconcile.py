"""reconcile: at start, settle what a crash left behind.

- a run (or maintenance run) still ``running`` whose process is gone becomes
  ``interrupted`` (and an alert);
- a droplet cleanup that was owed (``after`` of a snapshot) is run now;
- a Borg lock left by our own dead process is broken (never one held by a live process
  or another machine), then checkpoint archives of cut-off runs are deleted.
"""

from __future__ import annotations

import logging
import shutil
import socket
from pathlib import Path

from backupd.actions.context import Context, connect
from backupd.actions.scratch import remove_scratch
from backupd.actions.sweep import remove_stale_run_files, sweep_owed
from backupd.actions.tree import run_cleanup
from backupd.catalogue import RunStatus
from backupd.catalogue.claims import claim_token, token_holder
from backupd.catalogue.models import DrillStatus
from backupd.config.load import HostConfig
from backupd.errors import BackupdError, StoppedError
from backupd.local.procfs import process_alive

log = logging.getLogger(__name__)
CLEANUP_TIMEOUT = 600.0


def reconcile(ctx: Context, *, sweep_repositories: bool = True) -> None:
    """``sweep_repositories``: also look at every repository's lock (files only) and, where
    a dead process left one, break it and delete the checkpoints of the cut-off create: a
    start with nothing to reconcile costs no borg call (issue 14). What a failed or killed
    run wrote is settled by its sweep marker (actions/sweep.py) either way."""
    interrupt_dead_runs(ctx)
    run_owed_cleanups(ctx)
    remove_stale_run_files(ctx)
    for swept in sweep_owed(ctx):  # only repositories a failed or killed run wrote to
        if swept.problem:
            ctx.catalogue.record_alert("reconcile_failed", swept.problem, host=swept.host)
    if not sweep_repositories:
        return
    for repo in repositories(ctx):
        if not ctx.borg.locks.held(repo):
            continue  # nobody was cut off while writing it
        try:
            if break_stale_lock(ctx, repo):
                delete_checkpoints(ctx, repo)
        except StoppedError:
            raise  # a shutdown is no start-up failure: the next start looks again
        except BackupdError as e:
            log.error("start-up check of %s failed: %s", repo, e)
            ctx.catalogue.record_alert("reconcile_failed", f"{repo}: {e}")


def repositories(ctx: Context) -> list[Path]:
    store = ctx.config.store.path
    names = [*ctx.config.hosts, "_catalogue"]
    return [store / n for n in names if ctx.borg.is_repository(store / n)]


def break_stale_lock(ctx: Context, repo: Path) -> bool:
    """True when the repository is free to use (no lock, or a stale one of ours broken):
    backupd/borg/lock.py judges each holder; a live one or another machine's is left alone."""
    left = ctx.borg.locks.break_stale(repo)
    for line in left:
        log.warning("%s; left alone", line)
    return not left


def delete_checkpoints(ctx: Context, repo: Path) -> None:
    """Checkpoints are what Borg keeps of a cut-off create: never a good backup."""
    for entry in ctx.borg.list_archives(repo, checkpoints=True):
        if ".checkpoint" in entry.name:
            ctx.borg.delete(repo, entry.name)
            log.warning("%s: deleted checkpoint archive %s of a cut-off run", repo, entry.name)


def interrupt_dead_runs(ctx: Context) -> list[int]:
    cat = ctx.catalogue
    settled = []
    for m in cat.running_maintenance():
        if not process_alive(m.pid):
            message = (
                f"{m.host or 'store'}: {m.job} run {m.id} was interrupted (process {m.pid} gone)"
            )
            cat.finish_maintenance(m.id, RunStatus.INTERRUPTED, error=message)
            log.warning("%s", message)
    for run in cat.running_runs():
        if process_alive(run.pid):
            continue
        label = f"{run.source.host.name}/{run.source.name}"
        message = (
            f"{label}: run {run.id} was interrupted: process {run.pid} ended before it "
            "finished (crash, kill or reboot)"
        )
        cat.finish_run(run.id, RunStatus.INTERRUPTED, error=message)
        cat.record_alert(
            "run_interrupted",
            message,
            host=run.source.host.name,
            source=run.source.name,
            run_id=run.id,
        )
        log.warning("%s", message)
        settled.append(run.id)
    interrupt_dead_restores(ctx)
    interrupt_dead_drills(ctx)
    return settled


def interrupt_dead_drills(ctx: Context) -> None:
    """A drill cut short may have left a scratch server running and restored data on disk:
    stop the server (by its own pid file) and remove its directory."""
    for d in ctx.catalogue.running_drills():
        if process_alive(d.pid):
            continue
        if d.scratch:
            remove_scratch(Path(d.scratch))  # stops its server, removes the directory
        message = (
            f"{d.host}/{d.source}: drill {d.id} of {d.archive} was interrupted "
            f"(process {d.pid} gone); its scratch server and files were removed"
        )
        ctx.catalogue.finish_drill(d.id, DrillStatus.INTERRUPTED, rto_seconds=None, detail=message)
        log.warning("%s", message)


def interrupt_dead_restores(ctx: Context) -> None:
    """A restore cut short leaves a partial target: say so where ops look, and remove the
    private staging a push left behind."""
    for r in ctx.catalogue.running_restores():
        if process_alive(r.pid):
            continue
        message = (
            f"{r.host}/{r.source}: restore {r.id} into {r.target} was interrupted "
            f"(process {r.pid} gone): what it wrote there is incomplete"
        )
        ctx.catalogue.finish_restore(r.id, RunStatus.INTERRUPTED, error=message)
        ctx.catalogue.record_alert("restore_interrupted", message, host=r.host, source=r.source)
        shutil.rmtree(ctx.config.state_dir / "restore" / f"push-{r.id}", ignore_errors=True)
        log.warning("%s", message)


def run_owed_cleanups(ctx: Context) -> None:
    """Run every owed cleanup nobody else is running: its owner is gone (a crash) or gave it
    up (failed), and no other start claimed it first. The live backup that owes one (a
    snapshot still in use) keeps it: a `backup now` beside a running backup must not drop
    that backup's snapshot, and two starts at once must not run one cleanup twice."""
    token = claim_token()
    for owed in ctx.catalogue.pending_cleanups():
        host = ctx.config.hosts.get(owed.host)
        if host is None:
            log.error(
                "owed cleanup %d is for host %s, no longer configured: %s",
                owed.id,
                owed.host,
                " ".join(owed.argv),
            )
            continue
        if holder_alive(owed.claimed_by):
            log.info("owed cleanup %d: held by %s, still running", owed.id, owed.claimed_by)
            continue
        if not ctx.catalogue.claim_cleanup(owed.id, owed.claimed_by, token):
            continue  # another start took it between our look and our claim
        _run_owed(ctx, host, owed.id, owed.source, owed.argv)


def holder_alive(token: str | None) -> bool:
    """Whether a claim's holder may still act: its process runs here, or it is on another
    machine (whose processes we cannot see: left alone, like a Borg lock of another host)."""
    holder = token_holder(token)
    if holder is None:
        return False
    host, pid = holder
    return host != socket.gethostname() or process_alive(pid)


def _run_owed(
    ctx: Context, host: HostConfig, cleanup_id: int, source: str, argv: list[str]
) -> None:
    try:
        with connect(ctx, host) as conn:
            problem = run_cleanup(ctx, conn, cleanup_id, argv, CLEANUP_TIMEOUT)
    except BackupdError as e:
        problem = f"cannot reach {host.name} for an owed cleanup: {e}"
        ctx.catalogue.cleanup_failed(cleanup_id, problem)
    if problem:
        ctx.catalogue.record_alert(
            "cleanup_failed", f"{host.name}/{source}: {problem}", host=host.name, source=source
        )
    else:
        log.info("%s/%s: owed cleanup done: %s", host.name, source, " ".join(argv))
