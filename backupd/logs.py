"""Logging set-up: plain lines for people, no second timestamp under journald."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(verbose: bool = False, *, quiet: bool = False) -> None:
    """INFO for the daemon, WARNING for interactive tools (``quiet``), DEBUG when verbose."""
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not under_journald:
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO,
        format=fmt,
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("paramiko").setLevel(logging.WARNING)
