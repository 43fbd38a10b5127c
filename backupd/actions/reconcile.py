"""reconcile: at start, settle what a crash left behind.

- a run still ``running`` whose process is gone becomes ``interrupted`` (and an alert);
- a droplet cleanup that was owed (``after`` of a snapshot) is run now.
"""

from __future__ import annotations

import logging
import os

from backupd.actions.context import Context, ssh_target
from backupd.actions.tree import run_cleanup
from backupd.catalogue import RunStatus
from backupd.errors import BackupdError
from backupd.ssh import Connection

log = logging.getLogger(__name__)
CLEANUP_TIMEOUT = 600.0


def process_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reconcile(ctx: Context) -> None:
    interrupt_dead_runs(ctx)
    run_owed_cleanups(ctx)


def interrupt_dead_runs(ctx: Context) -> list[int]:
    cat = ctx.catalogue
    settled = []
    for run in cat.running_runs():
        if process_alive(run.pid):
            continue
        label = f"{run.source.host.name}/{run.source.name}"
        message = (f"{label}: run {run.id} was interrupted: process {run.pid} ended before it "
                   "finished (crash, kill or reboot)")  # fmt: skip
        cat.finish_run(run.id, RunStatus.INTERRUPTED, error=message)
        cat.record_alert("run_interrupted", message, host=run.source.host.name,
                         source=run.source.name, run_id=run.id)  # fmt: skip
        log.warning("%s", message)
        settled.append(run.id)
    return settled


def run_owed_cleanups(ctx: Context) -> None:
    for owed in ctx.catalogue.pending_cleanups():
        host = ctx.config.hosts.get(owed.host)
        if host is None:
            log.error("owed cleanup %d is for host %s, no longer configured: %s", owed.id,
                      owed.host, " ".join(owed.argv))  # fmt: skip
            continue
        try:
            with Connection(ssh_target(host)) as conn:
                problem = run_cleanup(ctx, conn, owed.id, owed.argv, CLEANUP_TIMEOUT)
        except BackupdError as e:
            problem = f"cannot reach {owed.host} for an owed cleanup: {e}"
            ctx.catalogue.cleanup_failed(owed.id, problem)
        if problem:
            ctx.catalogue.record_alert("cleanup_failed", f"{owed.host}/{owed.source}: {problem}",
                                       host=owed.host, source=owed.source)  # fmt: skip
        else:
            log.info("%s/%s: owed cleanup done: %s", owed.host, owed.source, " ".join(owed.argv))
