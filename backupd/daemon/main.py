"""backupd: the daemon entry point.

``backupd --config F`` runs the scheduler until SIGTERM (systemd ``Type=notify``);
``--once`` backs up every source once and exits; ``--unit-failed UNIT`` records that a
systemd unit failed (``OnFailure=``) so the alert mailer reports it.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backupd.actions.context import Context, settle
from backupd.catalogue import Catalogue
from backupd.config.load import DEFAULT_CONFIG, DEFAULT_STATE_DIR, Config, read_config
from backupd.errors import BackupdError, ConfigError, UsageError
from backupd.local.logs import setup_logging
from jobs.registry import kind_models

log = logging.getLogger("backupd")


# How a process may end and still count as a clean stop (the pid file is emptied).
ORDERLY_ENDS = (SystemExit, KeyboardInterrupt, BackupdError)


def record_unit_failure(ctx: Context, unit: str) -> int:
    message = f"systemd unit {unit} failed; see: journalctl -u {unit}"
    ctx.catalogue.record_alert("unit_failed", message)
    log.error("%s", message)
    return 0


def unit_failed(path: Path, unit: str) -> int:
    """OnFailure=: record the alert, even when the failure was an invalid config (then in
    the default catalogue, if there is one: the mailer reads it once the config is fixed)."""
    try:
        return record_unit_failure(Context(read_config(path, kinds=kind_models())[1]), unit)
    except ConfigError as e:
        fallback = Path(DEFAULT_STATE_DIR) / "catalogue.db"
        message = f"systemd unit {unit} failed; its configuration is invalid: {e.problems[0]}"
        log.error("%s", message)
        if not fallback.exists():
            return 1
        Catalogue(f"sqlite:///{fallback}").record_alert("unit_failed", message)
        return 0


@contextmanager
def single_instance(config: Config) -> Iterator[str | None]:
    """One daemon per state directory: two would both write the same repositories.
    Yields the pid of a previous daemon that ended without a clean stop (its pid is still
    in the file: a crash, SIGKILL or power loss), else None."""
    path = Context.private_dir(config.state_dir) / "backupd.pid"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            where = config.state_dir
            raise UsageError(f"another backupd (pid {other}) is running on {where}") from None
        previous = os.pread(fd, 32, 0).decode(errors="replace").strip() or None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield previous
        except ORDERLY_ENDS:  # sys.exit (any status), Ctrl-C, an error we reported
            os.ftruncate(fd, 0)
            raise
        # an unexpected exception (a bug) skips this: the next start reports the crash
        os.ftruncate(fd, 0)  # a clean stop: the next start finds the file empty
    finally:
        os.close(fd)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="backupd", description=__doc__, formatter_class=raw)
    parser.add_argument("--config", "-c", default=str(DEFAULT_CONFIG), help="configuration file")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="back up every source once, exit")
    mode.add_argument("--unit-failed", metavar="UNIT", help="record that a systemd unit failed")
    parser.add_argument("--log-json", action="store_true", help="log JSON lines")
    parser.add_argument("--verbose", "-v", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging(args.verbose, json_lines=args.log_json)
    path = Path(args.config)
    try:
        if args.unit_failed:
            sys.exit(unit_failed(path, args.unit_failed))
        text, config = read_config(path, kinds=kind_models())
        ctx = Context(config)
        settle()
        with single_instance(config) as crashed:
            if crashed is not None:
                message = (
                    f"backupd restarted after pid {crashed} ended without a clean stop "
                    "(crash, kill or power loss); interrupted work is reconciled"
                )
                log.error("%s", message)
                ctx.catalogue.record_alert("daemon_restarted", message)
            if args.once:
                from backupd.daemon.once import run_once  # not in the resident daemon

                sys.exit(run_once(ctx, path.absolute(), args.log_json))
            from backupd.daemon.service import Service

            sys.exit(Service(path.absolute(), text, config, args.log_json).run())
    except BackupdError as e:
        log.error("%s", e)
        sys.exit(e.exit_code)
