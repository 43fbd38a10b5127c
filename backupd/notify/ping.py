"""The dead-man's switch of a source (``ping_url``, healthchecks.io style)."""

from __future__ import annotations

import logging
import urllib.request

log = logging.getLogger(__name__)
PING_TIMEOUT = 10.0


def ping(url: str | None, ok: bool) -> None:
    """A dead-man's switch (healthchecks.io style): GET URL on success, URL/fail on
    failure. Never fails the job: a ping that cannot be sent is logged."""
    if not url:
        return
    target = url if ok else url.rstrip("/") + "/fail"
    try:
        with urllib.request.urlopen(target, timeout=PING_TIMEOUT) as answer:  # noqa: S310
            answer.read(1024)
    except (OSError, ValueError) as e:
        log.warning("ping %s failed: %s", target, e)
