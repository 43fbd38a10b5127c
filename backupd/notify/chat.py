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

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from backupd.config.credentials import read_secret
from backupd.config.load import NotifyConfig
from backupd.config.sections import quiet_apprise, url_problem
from backupd.errors import BackupdError, CredentialError, NotifyError

# Apprise's own limit on one service's whole send, as a multiple of [notify] timeout (the
# connect and each read may each take the timeout; a redirect or two more)
SERVICE_TIMEOUTS = 3
KEY_FILE = "notify.key"


@dataclass(frozen=True)
class Service:
    """One Apprise URL: ``channel`` names it in the catalogue (``apprise:`` and 16 hex
    digits of its SHA-256), ``label`` in logs and errors."""

    channel: str
    label: str
    url: str = field(repr=False)


@dataclass(frozen=True)
class Services:
    """What ``services`` found: the services to send to, and one line per URL that could
    not be used (the rest are sent to all the same)."""

    found: list[Service]
    problems: list[str]


def services(cfg: NotifyConfig, key: bytes) -> Services:
    """The configured services: ``urls``, then ``urls_from`` (read now, one per line, ``#``
    comments and blank lines skipped). A ``urls_from`` that cannot be read, or a line of
    it that is no Apprise URL, is a problem line; the other URLs are still services.
    ``key`` keys the services' fingerprints (``fingerprint_key``)."""
    urls, problems = list(cfg.urls), []
    if cfg.urls_from is not None:
        try:
            text = read_secret(cfg.urls_from, "notify.urls_from", output_secret=True)
        except BackupdError as e:
            text, problems = "", [str(e)]
        lines = [line.strip() for line in text.splitlines()]
        given = [(n, line) for n, line in enumerate(lines, 1) if line and line[0] != "#"]
        for n, line in given:
            problem = url_problem(line)
            if problem:
                problems.append(f"notify.urls_from: line {n}: {problem}")
            else:
                urls.append(line)
        if not given and not problems:
            problems.append("notify.urls_from: gave no URL")
    unique = list(dict.fromkeys(urls))
    channels = [_channel(url, key) for url in unique]
    labels = _labels(unique, channels)
    found = [Service(*given) for given in zip(channels, labels, unique, strict=True)]
    return Services(found, problems)


def fingerprint_key(state_dir: Path) -> bytes:
    """The secret that keys the services' fingerprints: ``<state_dir>/notify.key`` (0600),
    made at first use. With it, a copy of the catalogue does not let anyone confirm a
    guessed URL (an ntfy topic of a few words) by hashing it."""
    path = state_dir / KEY_FILE
    if not path.exists():  # made whole, then linked: a reader never sees it half written
        fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=".notify-key-")  # 0600
        try:
            os.write(fd, secrets.token_bytes(32))
            os.close(fd)
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    key = path.read_bytes()
    if len(key) != 32:
        raise CredentialError(f"{path}: not a key backupd made (32 bytes): remove it")
    return key


def _channel(url: str, key: bytes) -> str:
    return f"apprise:{hmac.new(key, url.encode(), hashlib.sha256).hexdigest()[:16]}"


# a host worth showing: a domain name (its last label letters), an IPv4 or IPv6 address,
# localhost; anything else in the host's place (an ntfy topic, a Slack or Pushbullet
# token) is a secret
_SHOWN_HOST = re.compile(
    r"^(localhost|\[[0-9A-Fa-f:.]+\]|[0-9]{1,3}(\.[0-9]{1,3}){3}"
    r"|([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,24})(:[0-9]{1,5})?$"
)


def _labels(urls: list[str], channels: list[str]) -> list[str]:
    """``scheme://host[:port]`` of each URL as written (``scheme://…`` where the host's
    place holds a token); where two have one label, each gets ``#`` and 4 hex digits of
    its fingerprint: the same service keeps its label whatever the order of the URLs."""
    plain = []
    for url in urls:
        scheme, _, rest = url.strip().partition("://")
        host = re.split(r"[/?#]", rest, maxsplit=1)[0].rpartition("@")[2]
        plain.append(f"{scheme.lower()}://{host if _SHOWN_HOST.match(host) else '…'}")
    return [
        f"{label} #{channel.removeprefix('apprise:')[:4]}" if plain.count(label) > 1 else label
        for label, channel in zip(plain, channels, strict=True)
    ]


def send_notification(
    service: Service, title: str, body: str, timeout: float, failure: bool = True
) -> None:
    """Deliver one message to ``service``; NotifyError (one line: label and what its
    service answered, with the URL's secret parts blanked) if it was not delivered."""
    plugin = _instantiate(service.url)
    import apprise

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
        app_id="backupd",  # the sender's name where the service shows one (Mattermost...)
        app_desc="backupd alerts",
        image_url_mask="",  # no icon fetched from Apprise's site by the chat's clients
        image_url_logo="",
        service_timeout=SERVICE_TIMEOUTS * timeout,
        result_log_disk_size=0,
    )


def _instantiate(url: str) -> Any:
    quiet_apprise()  # before its import, which logs already
    import apprise

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
