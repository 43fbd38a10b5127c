"""Logging set-up: plain lines for people, no second timestamp under journald, JSON lines
for machines (``--log-json``). Secrets never reach a log: commands are masked where they are
built (backupd.local.process.mask_argv)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from backupd.local.systemd import under_journald


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, logger, message (and the exception)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class ForPeople(logging.Formatter):
    """``warning: message``: what backupctl says besides its output, one line each."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def setup_logging(verbose: bool = False, *, quiet: bool = False, json_lines: bool = False) -> None:
    """INFO for the daemon, WARNING for interactive tools (``quiet``), DEBUG when verbose."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonLines())
    elif quiet and not verbose:
        # an operator at a terminal: "warning: ..." as a command-line tool says it
        handler.setFormatter(ForPeople())
    else:
        # journald stamps every line itself; a second timestamp only adds noise
        fmt = "%(levelname)s %(name)s: %(message)s"
        handler.setFormatter(logging.Formatter(fmt if under_journald() else "%(asctime)s " + fmt))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO,
        handlers=[handler],
        force=True,
    )
    for noisy in ("apscheduler", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # paramiko's transport thread logs each failed handshake as ERROR lines with its own
    # traceback; the same failure reaches the caller as an exception, said in one line
    # (host, what failed): the lines are kept for --verbose
    logging.getLogger("paramiko").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
