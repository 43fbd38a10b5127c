"""The daemon's alert thread: every ``[alerts] check_interval`` it looks for what nobody's
job reports, mails unsent alerts (and sends them to [notify]'s chat services) and queued
reports (backupd/actions/alerts.py)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from backupd.actions.alerts import dispatch, watch
from backupd.actions.context import Context
from backupd.actions.notify import dispatch_chat
from backupd.actions.report import deliver_queued

log = logging.getLogger(__name__)


class AlertLoop(threading.Thread):
    """The daemon's watcher: looks, mails and notifies every ``[alerts] check_interval``."""

    def __init__(self, config_of: Callable[[], Context]) -> None:
        super().__init__(name="alerts", daemon=True)
        self._ctx_of = config_of
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            ctx = self._ctx_of()
            try:
                watch(ctx)
                dispatch(ctx)
                dispatch_chat(ctx)
                if ctx.config.mail is not None:  # queued reports, at their retry times
                    deliver_queued(ctx)
            except Exception:  # the watcher must outlive any one bad look
                log.exception("alert check failed")
            self.stop.wait(ctx.config.alerts.check_interval)
