"""Alerts to chat and push services (``[notify]``, Apprise URLs; decision 0027).

Every alert goes to each service as it goes to mail: alerts with the same key are one
message, at most one per ``[notify] alert_interval`` and service (later ones are folded);
a service that is down keeps its alerts queued, and they go out once when it is back. Each
service is its own queue (a channel in the catalogue): one that is down holds back neither
mail nor the others. A sender claims a (service, key) and then the alerts it sends, so the
daemon's loop and ``backupctl alerts --send`` never both send one (decision 0012).

The first services ever configured get the alerts of the day before
(``NEW_SERVICE_BACKLOG``), not the whole history: the failure that made someone add them is
still news, last year's are not. A service added later (or a URL whose token was rotated,
which is a new service), or put back after it was removed, gets what the others still owe
and what came since the last look (``_open``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from backupd.actions.alerts import alert_text
from backupd.actions.context import Context
from backupd.catalogue.alerts import SUPPRESSED, group_key
from backupd.catalogue.claims import claim_token
from backupd.catalogue.models import AlertEvent, utcnow
from backupd.catalogue.store import Catalogue
from backupd.config.load import NotifyConfig
from backupd.errors import BackupdError
from backupd.notify.chat import (
    Service,
    fingerprint_key,
    notify_lease,
    send_notification,
    services,
)

log = logging.getLogger(__name__)

NEW_SERVICE_BACKLOG = timedelta(days=1)
WARNINGS = frozenset({"source_stale", "disk_warning"})  # the rest are failures

ChatSender = Callable[[Service, str, str, bool], None]  # service, title, body, failure


def dispatch_chat(
    ctx: Context,
    send: ChatSender | None = None,
    now: datetime | None = None,
    failures: list[str] | None = None,
) -> int:
    """Send unsent alerts to every ``[notify]`` service, one message per key and service;
    how many messages went out. A service that fails is tried again at the next look; its
    error line (and that of a ``urls_from`` URL that cannot be used) is logged and added
    to ``failures``."""
    cfg = ctx.config.notify
    if cfg is None:
        return 0
    failures = [] if failures is None else failures
    targets = services(cfg, fingerprint_key(ctx.private_dir(ctx.config.state_dir)))
    for problem in targets.problems:  # the other services are sent to all the same
        log.error("[notify]: %s (the other services are sent to)", problem)
        failures.append(problem)
    if send is None:

        def send(service: Service, title: str, body: str, failure: bool) -> None:
            send_notification(service, title, body, cfg.timeout, failure)

    now = now or utcnow()
    cat = ctx.catalogue
    since = _open(cat, targets.found, now)
    return sum(
        _dispatch_service(ctx, cfg, service, since[service.channel], send, now, failures)
        for service in targets.found
    )


def _open(cat: Catalogue, found: list[Service], now: datetime) -> dict[str, datetime]:
    """Each service's ``since``. The first services ever get the last day's alerts. One
    added later (a rotated token is a new URL), or back after it was removed, gets what
    the services of the last look still owe and what came since that look: its room does
    not hear the day's alerts twice, yet misses none the old URL could not deliver."""
    last = cat.last_look()
    if last is None:
        start = now - NEW_SERVICE_BACKLOG
    else:
        owed = cat.oldest_owed(cat.current_channels())
        start = min(last, owed) if owed is not None else last
    return {s.channel: cat.open_channel(s.channel, s.label, now, start, last) for s in found}


def _dispatch_service(
    ctx: Context,
    cfg: NotifyConfig,
    service: Service,
    since: datetime,
    send: ChatSender,
    now: datetime,
    failures: list[str],
) -> int:
    cat = ctx.catalogue
    keys = dict.fromkeys(group_key(e) for e in cat.channel_unsent(service.channel, since))
    token = claim_token()
    sent = 0
    for key in keys:  # oldest first
        if not cat.claim_channel_key(service.channel, key, token, notify_lease(cfg)):
            log.info("alerts %s to %s: another sender has them", key, service.label)
            continue
        try:
            outcome = _send_key(ctx, cfg, service, key, since, token, send, now)
        finally:
            cat.release_channel_key(service.channel, key, token)
        if isinstance(outcome, str):
            failures.append(outcome)
            break  # the service is down: its other alerts wait for the next look
        sent += outcome
    return sent


def _send_key(
    ctx: Context,
    cfg: NotifyConfig,
    service: Service,
    key: str,
    since: datetime,
    token: str,
    send: ChatSender,
    now: datetime,
) -> int | str:
    """With (service, key) held: claim its unsent alerts, then fold or send them. How many
    messages went out (0 or 1), or the error line of a failed send."""
    cat, channel = ctx.catalogue, service.channel
    events = cat.claim_channel_alerts(channel, key, token, notify_lease(cfg), since)
    if not events:
        return 0  # another sender sent them between our look and our claim
    ids = [e.id for e in events]
    last = cat.channel_last_sent(channel, key)
    if last is not None and now - last < timedelta(seconds=cfg.alert_interval):
        cat.channel_sent(channel, ids, token, now, f"{SUPPRESSED}sent at {last.isoformat()}")
        return 0
    title, body = alert_text(events)
    try:
        send(service, title, body, events[-1].kind not in WARNINGS)
    except BackupdError as e:
        cat.channel_failed(channel, ids, token, str(e))
        log.error("notification failed (kept, retried later): %s", e)
        return str(e)
    cat.channel_sent(channel, ids, token, now)
    log.info("sent to %s: %s (%d alert(s))", service.label, title, len(ids))
    return 1


@dataclass(frozen=True)
class Delivery:
    """An alert's delivery to one chat service (``backupctl alerts``)."""

    service: str  # its label: scheme://host, never the URL
    sent: datetime | None  # sent, or folded into an earlier message; None: waiting
    folded: bool
    attempts: int  # failed attempts so far
    last_error: str | None


def deliveries(ctx: Context, alerts: Sequence[AlertEvent]) -> dict[int, list[Delivery]]:
    """Each alert's delivery to each service configured now (those of the newest
    dispatch), by alert id; a service is left out for an alert older than its first day
    (never to be sent there)."""
    current = ctx.catalogue.current_channels() if ctx.config.notify is not None else []
    rows = ctx.catalogue.deliveries([a.id for a in alerts])
    found: dict[int, list[Delivery]] = {}
    for alert in alerts:
        mine = {r.channel: r for r in rows.get(alert.id, [])}
        for channel in current:
            row = mine.get(channel.channel)
            if row is not None:
                note = row.last_error or ""
                found.setdefault(alert.id, []).append(
                    Delivery(
                        channel.label,
                        row.sent_at,
                        row.sent_at is not None and note.startswith(SUPPRESSED),
                        row.attempts,
                        row.last_error,
                    )
                )
            elif alert.created_at >= channel.since:
                found.setdefault(alert.id, []).append(Delivery(channel.label, None, False, 0, None))
    return found
