"""One job of the daemon, in a process of its own: ``python -m backupd.daemon.worker``.

The daemon runs every job in a child process so that a hung job can be stopped (SIGTERM,
then SIGKILL) without touching the others, and a crash in one job cannot take the daemon
down. The worker:

- asks the kernel for SIGTERM when the daemon dies (``PR_SET_PDEATHSIG``), so a killed
  daemon never leaves a backup running unsupervised;
- turns SIGTERM into ``StoppedError`` and its own deadline (SIGALRM) into ``DeadlineError``:
  both unwind through the action, which kills borg's process group (no archive is
  committed) and records the run;
- exits ``0`` when the job succeeded, ``EXIT_TRANSIENT`` when trying again later may help,
  ``1`` otherwise. The catalogue holds the details; the exit code drives retries.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from backupd.actions.backup import backup_source
from backupd.actions.context import Context, settle
from backupd.actions.maintain import run_maintenance
from backupd.catalogue import RunStatus
from backupd.config.load import load_config_text
from backupd.errors import BackupdError, DeadlineError, StoppedError, UsageError
from backupd.local.logs import setup_logging
from backupd.local.process import signal_when_parent_dies
from jobs.registry import kind_models, load_config

log = logging.getLogger("backupd.daemon.worker")

EXIT_TRANSIENT = 75  # EX_TEMPFAIL
PARENT_ENV = "BACKUPD_DAEMON_PID"
SYSTEMD_ONLY = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def worker_env() -> dict[str, str]:
    """A worker's environment: ours without systemd's (only the daemon talks to systemd,
    NotifyAccess=main), and our pid, so the worker stops if we are gone."""
    env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_ONLY}
    env[PARENT_ENV] = str(os.getpid())
    return env


ONCE_STOP = "backupd --once was asked to stop"


def die_with_parent() -> None:
    """SIGTERM when the daemon goes; if it already went, stop now."""
    if not signal_when_parent_dies(signal.SIGTERM):
        return
    expected = os.environ.get(PARENT_ENV)
    if expected and os.getppid() != int(expected):
        raise StoppedError("stopped: backupd ended before this job started")


def install_stop_handlers(deadline: float, trigger: str = "schedule") -> None:
    state = {"stopping": False}
    why = ONCE_STOP if trigger == "once" else "backupd is shutting down"

    def on_term(signum: int, _frame: FrameType | None) -> None:
        if state["stopping"]:
            return  # unwinding already; let the cleanup finish
        state["stopping"] = True
        raise StoppedError(f"stopped before it finished: {why}")

    def on_alarm(signum: int, _frame: FrameType | None) -> None:
        if state["stopping"]:
            return
        state["stopping"] = True
        raise DeadlineError(f"stopped: the job deadline of {deadline:.0f}s passed")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(max(1, int(deadline)))


def run_backup(ctx: Context, target: str, trigger: str, retries_left: int = 0) -> int:
    if "/" not in target:
        return run_host(ctx, target, trigger)
    host, source = ctx.lookup_one(target)
    install_stop_handlers(ctx.config.deadline_for(source), trigger)
    outcome = backup_source(ctx, host, source, trigger, retries_left=retries_left)
    if not outcome.ok:
        log.error("%s", outcome.error)
    return exit_code(outcome.ok, outcome.transient)


def run_host(ctx: Context, name: str, trigger: str) -> int:
    """Every source of one host, in order (``backupd --once`` runs one of these per host):
    each under its own deadline; a stop ends the host's run."""
    host = ctx.config.hosts.get(name)
    if host is None:
        raise UsageError(f"unknown host {name!r}")
    failed = False
    for source in host.sources.values():
        install_stop_handlers(ctx.config.deadline_for(source), trigger)
        outcome = backup_source(ctx, host, source, trigger)
        signal.alarm(0)
        if outcome.status == RunStatus.INTERRUPTED:
            return exit_code(False, transient=True)
        if not outcome.ok:
            log.error("%s", outcome.error)
            failed = True
    return exit_code(not failed, transient=False)


def run_maintenance_job(ctx: Context, job: str, host: str | None, trigger: str) -> int:
    install_stop_handlers(ctx.config.daemon.job_deadline)
    outcome = run_maintenance(ctx, job, host, trigger)
    return exit_code(outcome.ok, outcome.transient)


def exit_code(ok: bool, transient: bool) -> int:
    """What the daemon reads: 0 done, EXIT_TRANSIENT retry later, 1 failed for good."""
    if ok:
        return 0
    return EXIT_TRANSIENT if transient else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="backupd-worker", description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--snapshot", help="the daemon's copy of the config it validated")
    parser.add_argument("--trigger", default="schedule")
    parser.add_argument(
        "--retries-left",
        type=int,
        default=0,
        help="a transient failure is retried this often: no alert yet",
    )
    parser.add_argument("--log-json", action="store_true")
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.add_argument("job", help="backup, or a maintenance job (prune, compact, ...)")
    parser.add_argument(
        "target",
        nargs="?",
        help="HOST/SOURCE for backup (HOST: each of its sources in turn); HOST for maintenance",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose, json_lines=args.log_json)
    try:
        die_with_parent()
        if args.snapshot:  # what the daemon validated, even if the file changed since
            text = Path(args.snapshot).read_text(encoding="utf-8")
            ctx = Context(load_config_text(text, Path(args.config), kinds=kind_models()))
        else:
            ctx = Context(load_config(args.config))
        settle()
        if args.job == "backup":
            return run_backup(ctx, args.target or "", args.trigger, args.retries_left)
        return run_maintenance_job(ctx, args.job, args.target, args.trigger)
    except StoppedError as e:  # before a run row exists (sweeping): no fault, said once
        log.warning("%s %s: %s", args.job, args.target or "", e)
        return exit_code(False, transient=True)
    except BackupdError as e:  # before a run row exists (config, lookup): say it, once
        log.error("%s %s: %s", args.job, args.target or "", e)
        return exit_code(False, e.transient)
    finally:
        signal.alarm(0)


if __name__ == "__main__":
    sys.exit(main())
