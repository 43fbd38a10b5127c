"""The daemon's loop: schedules fire into a queue; the loop starts queued jobs as worker
processes within the limits, supervises them, retries transient failures, and stops.

Limits, in order: ``workers`` jobs at once overall, ``per_host`` jobs on one droplet, and
never two jobs writing one Borg repository (one repository per host; store-wide jobs
share ``_store``). APScheduler only *enqueues* (from its thread); everything else runs in
the main thread, so the queue needs no locks. The queue is mirrored in the catalogue for
``backupctl status``.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler

from backupd.actions.context import Context
from backupd.actions.maintain import jobs_for, schedule_of
from backupd.actions.reconcile import interrupt_dead_runs, reconcile
from backupd.catalogue.models import utcnow
from backupd.config.cron import cron_trigger, interval
from backupd.config.load import Config, read_config
from backupd.daemon.alerts import AlertLoop
from backupd.daemon.metrics import serve_metrics
from backupd.daemon.worker import EXIT_TRANSIENT, worker_env
from backupd.errors import ConfigError
from backupd.local.process import Child, start_child
from backupd.local.procfs import kill_tree
from backupd.local.systemd import notify, watchdog_interval
from jobs.registry import kind_models

log = logging.getLogger("backupd")

TICK = 1.0
ABORT_GRACE = 60.0  # after SIGTERM, how long a worker gets to unwind before SIGKILL
HUNG_SLACK = 300.0  # a worker stops itself at its deadline; past it by this much: kill


@dataclass(frozen=True)
class JobKey:
    job: str  # "backup" or a maintenance job
    host: str | None
    source: str | None = None

    @property
    def target(self) -> str | None:
        return f"{self.host}/{self.source}" if self.source else self.host

    @property
    def repository(self) -> str:
        return self.host or "_store"

    def __str__(self) -> str:
        return f"{self.job} {self.target}" if self.target else self.job


@dataclass
class Pending:
    key: JobKey
    trigger: str
    attempt: int
    not_before: datetime
    queue_id: int = 0


@dataclass
class Running:
    pending: Pending
    proc: Child
    deadline: float  # monotonic
    started: float = field(default_factory=time.monotonic)
    term_sent: float | None = None


def blocked(key: JobKey, running: list[JobKey], per_host: int) -> bool:
    """Whether ``key`` must wait for the jobs running now."""
    if any(k.repository == key.repository for k in running):
        return True  # one writer per Borg repository
    on_host = sum(1 for k in running if key.host is not None and k.host == key.host)
    return on_host >= per_host


class Service:
    def __init__(self, config_path: Path, config_text: str, config: Config, log_json: bool):
        self.config_path, self.log_json = config_path, log_json
        self.ctx = Context(config)
        self.snapshot = self.ctx.private_dir(config.state_dir / "run") / "config.toml"
        self._write_snapshot(config_text)
        self.pending: list[Pending] = []
        self.running: dict[int, Running] = {}
        self.inbox: queue.SimpleQueue[tuple[JobKey, str]] = queue.SimpleQueue()
        self.wake = threading.Event()
        self.stopping = False
        self.reload_wanted = False
        self.scheduler = BackgroundScheduler(timezone="UTC")
        self._last_status = ""

    @property
    def config(self) -> Config:
        return self.ctx.config

    # -- life cycle ---------------------------------------------------------------------
    def run(self) -> int:
        reconcile(self.ctx)
        self.ctx.catalogue.clear_queue()
        alerts = AlertLoop(lambda: self.ctx)  # stale sources, disk use; mails every alert
        alerts.start()
        metrics = serve_metrics(lambda: self.ctx)  # [metrics] listen: read at start only
        self._install_signals()
        self._schedule_all()
        self._queue_catch_ups()
        self.scheduler.start()
        notify("READY=1", f"STATUS={self._status_line()}")
        log.info(
            "backupd started: %d source(s), %d scheduled job(s)",
            len(self.config.all_sources()),
            len(self.scheduler.get_jobs()),
        )
        watchdog = watchdog_interval()
        last_ping = 0.0
        while not self.stopping:
            self.step()
            if watchdog is not None and time.monotonic() - last_ping >= watchdog:
                notify("WATCHDOG=1")
                last_ping = time.monotonic()
            self.wake.wait(min(TICK, watchdog or TICK))
            self.wake.clear()
        alerts.stop.set()
        if metrics is not None:
            metrics.shutdown()
        self._shutdown()
        return 0

    def step(self) -> None:
        if self.reload_wanted:
            self.reload_wanted = False
            self.reload()
        self._drain_inbox()
        self._reap()
        self._enforce_deadlines()
        self._dispatch()
        status = self._status_line()
        if status != self._last_status:
            notify(f"STATUS={status}")
            self._last_status = status

    def _install_signals(self) -> None:
        def on_stop(signum: int, _frame: FrameType | None) -> None:
            self.stopping = True
            self.wake.set()

        def on_hup(signum: int, _frame: FrameType | None) -> None:
            self.reload_wanted = True
            self.wake.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def reload(self) -> None:
        """SIGHUP: a good config replaces the running one; a bad one changes nothing."""
        notify("RELOADING=1")
        try:
            text, config = read_config(self.config_path, kinds=kind_models())
        except ConfigError as e:
            reason = str(e).replace("\n", ";")
            log.error("reload refused, keeping the running configuration: %s", reason)
            notify("READY=1", "STATUS=reload refused: configuration invalid (see the log)")
            return
        self.ctx = Context(config)
        self._write_snapshot(text)
        self.scheduler.remove_all_jobs()
        self._schedule_all()
        known: set[tuple[str | None, str]] = {(s.host, s.name) for s in config.all_sources()}
        for p in list(self.pending):
            if not self._still_configured(p.key, known):
                self.pending.remove(p)
                self.ctx.catalogue.dequeue(p.queue_id)
        log.info("configuration reloaded: %d source(s)", len(config.all_sources()))
        notify("READY=1")

    def _shutdown(self) -> None:
        """Let running jobs finish within stop_grace, then stop them cleanly, then exit."""
        notify("STOPPING=1", f"STATUS=stopping: {len(self.running)} job(s) running")
        self.scheduler.shutdown(wait=False)
        grace = self.config.daemon.stop_grace
        log.info("stopping: %d job(s) running, waiting up to %.0fs", len(self.running), grace)
        self._wait_running(time.monotonic() + grace)
        for r in self.running.values():
            log.warning("%s: stopping it (grace period over)", r.pending.key)
            r.proc.send_signal(signal.SIGTERM)
        self._wait_running(time.monotonic() + ABORT_GRACE)
        for r in self.running.values():
            log.error("%s: did not stop; killed", r.pending.key)
            kill_tree(r.proc.pid)
        self._wait_running(time.monotonic() + 10)
        interrupt_dead_runs(self.ctx)
        self.ctx.catalogue.clear_queue()
        log.info("backupd stopped")

    def _wait_running(self, until: float) -> None:
        while self.running and time.monotonic() < until:
            self._reap()
            time.sleep(0.2)

    # -- scheduling ---------------------------------------------------------------------
    def planned(self) -> list[tuple[JobKey, str]]:
        jobs = [
            (JobKey("backup", s.host, s.name), self.config.schedule_for(s))
            for s in self.config.all_sources()
        ]
        jobs += [
            (JobKey(name, host), getattr(self.config.maintenance, schedule_of(name)))
            for name, host in jobs_for(self.ctx)
        ]
        return jobs

    def _schedule_all(self) -> None:
        jitter = self.config.daemon.jitter
        for key, cron in self.planned():
            self.scheduler.add_job(
                self._fire,
                cron_trigger(cron, jitter),
                args=(key,),
                id=str(key),
                replace_existing=True,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=3600,
            )

    def _fire(self, key: JobKey) -> None:  # APScheduler's thread: hand over, nothing else
        self.inbox.put((key, "schedule"))
        self.wake.set()

    def _queue_catch_ups(self) -> None:
        """A source whose last success is older than its schedule's interval missed a run
        while backupd was down (or never ran): run it once, soon."""
        now = utcnow()
        when = now + timedelta(seconds=self.config.daemon.catch_up_delay)
        for source in self.config.all_sources():
            last = self.ctx.catalogue.last_success(source.host, source.name)
            every = interval(self.config.schedule_for(source), now)
            if last is None or now - last > every:
                seen = last.isoformat(timespec="seconds") if last else "never"
                log.info(
                    "%s/%s: missed a run (last success %s): catch-up queued",
                    source.host,
                    source.name,
                    seen,
                )
                self._enqueue(JobKey("backup", source.host, source.name), "catch-up", 1, when)

    def _drain_inbox(self) -> None:
        while True:
            try:
                key, trigger = self.inbox.get_nowait()
            except queue.Empty:
                return
            if self._known(key):
                log.info("%s: still queued or running; this firing is skipped", key)
                continue
            self._enqueue(key, trigger, 1, utcnow())

    def _known(self, key: JobKey) -> bool:
        return any(p.key == key for p in self.pending) or any(
            r.pending.key == key for r in self.running.values()
        )

    def _enqueue(self, key: JobKey, trigger: str, attempt: int, not_before: datetime) -> None:
        p = Pending(key, trigger, attempt, not_before)
        p.queue_id = self.ctx.catalogue.enqueue(
            key.job, key.host, key.source, trigger, attempt, not_before
        )
        self.pending.append(p)

    # -- dispatching and supervising ------------------------------------------------------
    def _dispatch(self) -> None:
        now = utcnow()
        for p in sorted(self.pending, key=lambda p: p.not_before):
            if len(self.running) >= self.config.daemon.workers:
                return
            if p.not_before <= now and not self._blocked(p.key):
                self.pending.remove(p)
                self._start(p)

    def _blocked(self, key: JobKey) -> bool:
        keys = [r.pending.key for r in self.running.values()]
        return blocked(key, keys, self.config.daemon.per_host)

    def _start(self, p: Pending) -> None:
        argv = [
            sys.executable,
            "-m",
            "backupd.daemon.worker",
            "--config",
            str(self.config_path),
            "--snapshot",
            str(self.snapshot),
            "--trigger",
            p.trigger,
            "--retries-left",
            str(max(0, self.config.daemon.retries - p.attempt + 1)),
            p.key.job,
        ]
        if self.log_json:
            argv.insert(3, "--log-json")
        if p.key.target:
            argv.append(p.key.target)
        env = worker_env()
        # own session: a Ctrl-C at a terminal reaches the daemon only, which decides
        proc = start_child(tuple(argv), env=env)
        deadline = self._deadline(p.key)
        self.running[proc.pid] = Running(p, proc, time.monotonic() + deadline)
        self.ctx.catalogue.mark_started(p.queue_id, proc.pid)
        log.info("%s: started (%s, attempt %d, pid %d)", p.key, p.trigger, p.attempt, proc.pid)

    def _deadline(self, key: JobKey) -> float:
        host = self.config.hosts.get(key.host or "")
        if key.source and host is not None:
            source = host.sources.get(key.source)
            if source is not None:
                return self.config.deadline_for(source)
        return self.config.daemon.job_deadline

    def _reap(self) -> None:
        for pid, r in list(self.running.items()):
            code = r.proc.poll()
            if code is None:
                continue
            del self.running[pid]
            self.ctx.catalogue.dequeue(r.pending.queue_id)
            self._finished(r, code)

    def _finished(self, r: Running, code: int) -> None:
        key, seconds = r.pending.key, time.monotonic() - r.started
        if code < 0:  # killed: its run row still says running
            log.error("%s: worker killed by signal %d after %.0fs", key, -code, seconds)
            interrupt_dead_runs(self.ctx)
            return
        if code == 0:
            log.info("%s: finished after %.0fs", key, seconds)
            return
        retry = code == EXIT_TRANSIENT and not self.stopping
        retry = retry and r.pending.attempt <= self.config.daemon.retries
        if not retry:
            if code == EXIT_TRANSIENT and self.stopping:  # its row says interrupted
                log.info("%s: stopped with backupd after %.0fs", key, seconds)
                return
            # the worker's own exit status (not backupctl's), and where the reason is
            where = f"backupctl runs {key.target}" if key.source else "backupctl maintenance status"
            log.error("%s: failed after %.0fs (worker exit %d); why: %s", key, seconds, code, where)
            return
        delay = self.config.daemon.retry_backoff * 2 ** (r.pending.attempt - 1)
        log.warning("%s: transient failure; retry %d in %.0fs", key, r.pending.attempt, delay)
        self._enqueue(key, "retry", r.pending.attempt + 1, utcnow() + timedelta(seconds=delay))

    def _enforce_deadlines(self) -> None:
        """Backstop: a worker stops itself at its deadline; one that did not is hung."""
        now = time.monotonic()
        for r in self.running.values():
            if r.term_sent is None and now > r.deadline + HUNG_SLACK:
                log.error("%s: past its deadline and not stopping: SIGTERM", r.pending.key)
                r.proc.send_signal(signal.SIGTERM)
                r.term_sent = now
            elif r.term_sent is not None and now > r.term_sent + ABORT_GRACE:
                log.error("%s: hung after SIGTERM: killed", r.pending.key)
                kill_tree(r.proc.pid)

    # -- helpers ----------------------------------------------------------------------------
    def _write_snapshot(self, text: str) -> None:
        tmp = self.snapshot.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, self.snapshot)

    def _still_configured(self, key: JobKey, known: set[tuple[str | None, str]]) -> bool:
        if key.source is not None and (key.host, key.source) not in known:
            return False
        return key.host is None or key.host in self.config.hosts

    def _status_line(self) -> str:
        running = ", ".join(str(r.pending.key) for r in self.running.values()) or "nothing"
        return f"running: {running}; queued: {len(self.pending)}"
