"""Alerts to chat and push services (``[notify]``, Apprise URLs; decision 0027).

Every alert goes to each service as it goes to mail: alerts with the same key are one
message, at most one per ``[notify] alert_interval`` and service (later ones are folded);
a service that is down keeps its alerts queued, and they go out once when it is back. Each
service is its own queue (a channel in the catalogue): one that is down holds back neither
mail nor the others. A sender claims a (service, key) and then the alerts it sends, so the
daemon's loop and ``backupctl alerts --send`` never both send one (decision 0012).

A service first used gets the alerts of the day before (``NEW_SERVICE_BACKLOG``), not the
whole history: the failure that made someone add it is still news, last year's are not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from backupd.actions.alerts import alert_text
from backupd.actions.context import Context
from backupd.catalogue.alerts import SUPPRESSED, group_key
from backupd.catalogue.claims import claim_token
from backupd.catalogue.models import utcnow
from backupd.config.load import NotifyConfig
from backupd.errors import BackupdError
from backupd.notify.chat import Service, notify_lease, send_notification, services

log = logging.getLogger(__name__)

NEW_SERVICE_BACKLOG = timedelta(days=1)
WARNINGS = frozenset({"source_stale", "disk_warning"})  # the rest are failures

ChatSender = Callable[[Service, str, str, bool], None]  # service, title, body, failure


def dispatch_chat(ctx: Context, send: ChatSender | None = None, now: datetime | None = None) -> int:
    """Send unsent alerts to every ``[notify]`` service, one message per key and service;
    how many messages went out. A service that fails is tried again at the next look."""
    cfg = ctx.config.notify
    if cfg is None:
        return 0
    try:
        targets = services(cfg)
    except BackupdError as e:  # urls_from unreadable: every alert stays queued
        log.error("notifications not sent (kept, retried later): %s", e)
        return 0
    if send is None:

        def send(service: Service, title: str, body: str, failure: bool) -> None:
            send_notification(service, title, body, cfg.timeout, failure)

    now = now or utcnow()
    return sum(_dispatch_service(ctx, cfg, service, send, now) for service in targets)


def _dispatch_service(
    ctx: Context, cfg: NotifyConfig, service: Service, send: ChatSender, now: datetime
) -> int:
    cat = ctx.catalogue
    since = cat.open_channel(service.channel, service.label, now, NEW_SERVICE_BACKLOG)
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
        if outcome is None:
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
) -> int | None:
    """With (service, key) held: claim its unsent alerts, then fold or send them. How many
    messages went out (0 or 1); None if the send failed."""
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
        return None
    cat.channel_sent(channel, ids, token, now)
    return 1
