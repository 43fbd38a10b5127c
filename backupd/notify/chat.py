"""Chat and push notifications through Apprise: one message to one service, or a one-line
NotifyError.

Apprise (decision 0027) speaks Mattermost, Rocket.Chat, Matrix, Slack, ntfy, Gotify, a
plain JSON webhook and ~100 more: what to send and when (dedup, rate limit, queue) is the
actions' business, as for mail. A URL holds its service's token, so it is never logged,
stored or put into an error: a service is named by its label (``ntfy://ntfy.example.org``)
and, in the catalogue, by a fingerprint of its URL. Apprise's own log (which prints URLs and
payloads at debug level) is kept out of backupd's (``quiet_apprise``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from backupd.config.credentials import read_secret
from backupd.config.load import NotifyConfig
from backupd.config.sections import quiet_apprise, url_problem
from backupd.errors import ConfigError, NotifyError

# Apprise's own limit on one service's whole send, as a multiple of [notify] timeout (the
# connect and each read may each take the timeout; a redirect or two more)
SERVICE_TIMEOUTS = 3


@dataclass(frozen=True)
class Service:
    """One Apprise URL: ``channel`` names it in the catalogue (``apprise:`` and 16 hex
    digits of its SHA-256), ``label`` in logs and errors."""

    channel: str
    label: str
    url: str = field(repr=False)


def services(cfg: NotifyConfig) -> list[Service]:
    """The configured services: ``urls``, then ``urls_from`` (read now, one per line, ``#``
    comments and blank lines skipped). CredentialError if it cannot be read, ConfigError
    naming the line of a line that is no Apprise URL."""
    urls = list(cfg.urls)
    if cfg.urls_from is not None:
        text = read_secret(cfg.urls_from, "notify.urls_from")
        lines = [line.strip() for line in text.splitlines()]
        for n, line in enumerate(lines, 1):
            if not line or line.startswith("#"):
                continue
            problem = url_problem(line)
            if problem:
                raise ConfigError([f"notify.urls_from: line {n}: {problem}"])
            urls.append(line)
    return [_service(url) for url in dict.fromkeys(urls)]


def _service(url: str) -> Service:
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Service(f"apprise:{digest}", _label(url), url)


def _label(url: str) -> str:
    """``scheme://host`` from Apprise's privacy form of the URL (tokens shortened to
    ``T...2``), without user, password, path or query."""
    plugin = _instantiate(url)
    shown = plugin.url(privacy=True) if plugin is not None else url.partition("://")[0] + "://"
    scheme, _, rest = shown.partition("://")
    host = re.split(r"[/?#]", rest, maxsplit=1)[0].rpartition("@")[2]
    return f"{scheme}://{host}"


def send_notification(
    service: Service, title: str, body: str, timeout: float, failure: bool = True
) -> None:
    """Deliver one message to ``service``; NotifyError (one line: label and what its
    service answered, with the URL's secret parts blanked) if it was not delivered."""
    import apprise

    plugin = _instantiate(service.url)
    if plugin is None:  # config validated it: only a changed Apprise gets here
        raise NotifyError(f"{service.label}: Apprise no longer reads this URL")
    plugin.socket_connect_timeout = timeout
    plugin.socket_read_timeout = timeout
    sender = apprise.Apprise(asset=_asset(timeout))
    sender.add(plugin)
    kind = apprise.NotifyType.FAILURE if failure else apprise.NotifyType.WARNING
    try:
        result = sender.notify(body=body, title=title, notify_type=kind)
    except Exception as e:  # a service's module that broke: the alert stays queued
        reason = _scrub(str(e), service.url) or type(e).__name__
        raise NotifyError(f"{service.label}: Apprise failed: {reason[:300]}") from None
    if result:
        return
    said = [entry.message for entry in result.logs() if entry.level in ("WARNING", "ERROR")]
    reason = _scrub(" | ".join(dict.fromkeys(said)), service.url) or "not delivered"
    raise NotifyError(f"{service.label}: {reason[:300]}")


def notify_lease(cfg: NotifyConfig) -> timedelta:
    """How long a claim on a channel's alerts holds: it must outlast the slowest send
    (Apprise stops one at ``SERVICE_TIMEOUTS`` x timeout), doubled, and at least 5 min."""
    return timedelta(seconds=max(300.0, 2 * SERVICE_TIMEOUTS * cfg.timeout))


def _asset(timeout: float) -> Any:
    import apprise

    return apprise.AppriseAsset(
        plugin_paths=[],  # no plugins from ~/.apprise: only Apprise's own code runs
        storage_mode="memory",  # nothing written under the daemon's home
        secure_logging=True,
        service_timeout=SERVICE_TIMEOUTS * timeout,
        result_log_disk_size=0,
    )


def _instantiate(url: str) -> Any:
    import apprise

    quiet_apprise()
    return apprise.Apprise.instantiate(url, asset=_asset(10.0))


def _scrub(text: str, url: str) -> str:
    """``text`` without any part of ``url`` past its scheme and host that could be a secret
    (user, password, path segments, query values of 4 characters or more)."""
    rest = url.partition("://")[2]
    host = re.split(r"[/?#]", rest, maxsplit=1)[0].rpartition("@")[2].partition(":")[0]
    parts = {p for p in re.split(r"[/:@?&=#,]", rest) if len(p) >= 4 and p != host}
    for part in sorted(parts, key=len, reverse=True):
        text = text.replace(part, "…")
    return " ".join(text.split())
