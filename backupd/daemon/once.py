"""``backupd --once``: every source backed up once, then exit (a systemd timer's run).

Hosts are backed up in parallel as the daemon does it: at most ``[daemon] workers`` at a
time and never two jobs on one host (one repository, one writer). Each host's sources run
one after another in one worker process (``python -m backupd.daemon.worker backup HOST``:
one process start per host, not per source). With one worker, or one host, everything
runs here in order.

SIGTERM or SIGINT (systemd stopping the timer's run, Ctrl-C) stop it cleanly: every
source being pulled is recorded as interrupted (no alert: somebody asked), the rest are
skipped, and the exit status is 128 + the signal, as a shell reports it.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from backupd.actions.backup import backup_source
from backupd.actions.context import Context
from backupd.actions.reconcile import reconcile
from backupd.catalogue.models import utcnow
from backupd.config.load import HostConfig
from backupd.daemon.worker import ONCE_STOP, worker_env
from backupd.errors import StoppedError
from backupd.local.process import Child, start_child
from backupd.local.procfs import kill_tree

log = logging.getLogger("backupd")

POLL = 0.1  # seconds between looks at the workers
STOP_GRACE = 60.0  # after SIGTERM, how long a worker gets to record its run before SIGKILL


class StopOnSignals:
    """SIGTERM/SIGINT raise StoppedError once, where the work is: the action unwinds
    (borg's process group stopped, the run recorded) instead of the process dying."""

    def __init__(self) -> None:
        self.signum: int | None = None
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is not None:
            return  # unwinding already; let the cleanup finish
        self.signum = signum
        raise StoppedError(f"stopped before it finished: {ONCE_STOP}")


def run_once(ctx: Context, config_path: Path, log_json: bool = False) -> int:
    """Back up every source once; the exit status says whether all succeeded."""
    stop = StopOnSignals()
    started = utcnow()
    hosts = [h for h in ctx.config.hosts.values() if h.sources]
    try:
        reconcile(ctx)
        if ctx.config.daemon.workers > 1 and len(hosts) > 1:
            Workers(config_path, log_json, ctx.config.daemon.workers).run(hosts)
        else:
            for host in hosts:
                _host_here(ctx, host, stop)
    except StoppedError:  # stopped outside a run (reconciling, sweeping): nothing to record
        pass
    if stop.signum is not None:
        log.warning("stopped by signal %d before every source was backed up", stop.signum)
        return 128 + stop.signum
    statuses = ctx.catalogue.run_statuses_since(started, "once")
    total, good = len(ctx.config.all_sources()), statuses.count(True)
    log.info("run complete: %d of %d source(s) succeeded", good, total)
    return 0 if good == total else 1


def _host_here(ctx: Context, host: HostConfig, stop: StopOnSignals) -> None:
    for source in host.sources.values():
        if stop.signum is not None:
            return
        outcome = backup_source(ctx, host, source, trigger="once")
        if not outcome.ok and stop.signum is None:
            log.error("%s", outcome.error)


class Workers:
    """One worker process per host, ``limit`` at a time."""

    def __init__(self, config_path: Path, log_json: bool, limit: int) -> None:
        self.config_path, self.log_json, self.limit = config_path, log_json, limit
        self.running: dict[str, Child] = {}

    def run(self, hosts: list[HostConfig]) -> None:
        todo = [h.name for h in hosts]
        try:
            while todo or self.running:
                while todo and len(self.running) < self.limit:
                    name = todo.pop(0)
                    self.running[name] = self._start(name)
                time.sleep(POLL)
                self._reap()
        except StoppedError:
            self._stop_all()
            raise

    def _start(self, host: str) -> Child:
        argv = [sys.executable, "-m", "backupd.daemon.worker", "--config", str(self.config_path)]
        argv += ["--log-json"] if self.log_json else []
        return start_child((*argv, "--trigger", "once", "backup", host), env=worker_env())

    def _reap(self) -> None:
        for name, proc in list(self.running.items()):
            if proc.poll() is not None:
                del self.running[name]

    def _stop_all(self) -> None:
        """Each worker records its run interrupted (its own SIGTERM handler); one that does
        not end within the grace is killed with everything it started."""
        for proc in self.running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for proc in self.running.values():
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(POLL)
            if proc.poll() is None:
                kill_tree(proc.pid)
                proc.wait()
