"""backupd: the daemon entry point. ``--once`` backs up every configured source and exits."""

from __future__ import annotations

import argparse
import logging
import sys

from backupd.actions.backup import backup_source
from backupd.actions.context import Context
from backupd.actions.reconcile import reconcile
from backupd.config import DEFAULT_CONFIG, load_config
from backupd.errors import BackupdError
from backupd.logs import setup_logging

log = logging.getLogger("backupd")


def run_once(ctx: Context) -> int:
    """Back up every source once; the exit status says whether all succeeded."""
    reconcile(ctx)
    failed = 0
    for host in ctx.config.hosts.values():
        for source in host.sources.values():
            outcome = backup_source(ctx, host, source, trigger="once")
            if not outcome.ok:
                log.error("%s", outcome.error)
                failed += 1
    total = len(ctx.config.all_sources())
    log.info("run complete: %d of %d source(s) succeeded", total - failed, total)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="backupd", description=__doc__)
    parser.add_argument("--config", "-c", default=str(DEFAULT_CONFIG), help="configuration file")
    parser.add_argument("--once", action="store_true", help="back up every source once, exit")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        ctx = Context(load_config(args.config))
        if not args.once:
            log.error("only --once is available in this version; the scheduler is not built yet")
            sys.exit(2)
        sys.exit(run_once(ctx))
    except BackupdError as e:
        log.error("%s", e)
        sys.exit(e.exit_code)
