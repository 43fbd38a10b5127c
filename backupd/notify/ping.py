"""The dead-man's switch of a source (``ping_url``, healthchecks.io style)."""

from __future__ import annotations

import logging
import urllib.parse
import urllib.request

log = logging.getLogger(__name__)
PING_TIMEOUT = 10.0


def ping_start(url: str | None) -> None:
    """``URL/start`` as a run begins: the switch measures the run and knows one is under
    way (a start with no end within its grace is a hung backup)."""
    _get(url, "start")


def ping_end(url: str | None, exit_status: int) -> None:
    """``URL`` after a good run; ``URL/<exit status>`` after a failed one (backupctl's exit
    code for that failure: 6 a dump refused, 7 Borg, 4 a changed host key...), which
    healthchecks.io records as a failure with that code."""
    _get(url, str(exit_status) if exit_status else None)


def _get(url: str | None, suffix: str | None) -> None:
    """Never fails the job: a ping that cannot be sent is logged. The suffix goes at the
    end of the URL's path, before any query string."""
    if not url:
        return
    target = url
    if suffix is not None:
        parts = urllib.parse.urlsplit(url)
        target = parts._replace(path=parts.path.rstrip("/") + "/" + suffix).geturl()
    try:
        with urllib.request.urlopen(target, timeout=PING_TIMEOUT) as answer:  # noqa: S310
            answer.read(1024)
    except (OSError, ValueError) as e:
        log.warning("ping %s failed: %s", target, e)
