"""Alerts: what must reach a person at once, mailed deduplicated and rate-limited.

Jobs record alert events in the catalogue (a failed backup after its retries, a failed
drill, a changed host key...). ``watch`` adds the conditions nobody's job reports: stale
sources and a filling store. ``dispatch`` mails every unsent event: events with the same
key go out as one mail, at most once per ``[mail] alert_interval`` (later ones are folded,
marked as such); a failed send leaves them unsent, tried again at the next look. Without
``[mail]`` alerts stay recorded (status, report) and are logged.

The daemon's loop and ``backupctl alerts --send`` may dispatch at once: a sender first
claims a key (only one at a time decides mail or fold for it, so the rate limit holds),
then that key's unsent events, and mails only the events it won (decision 0012).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from email.message import EmailMessage

from backupd.actions.context import Context
from backupd.actions.status import status_rows
from backupd.borg.space import StoreDisk
from backupd.catalogue.alerts import SUPPRESSED, group_key
from backupd.catalogue.claims import claim_token
from backupd.catalogue.models import AlertEvent, utcnow
from backupd.config.load import MailConfig
from backupd.errors import BackupdError
from backupd.notify.mail import claim_lease, send_message

log = logging.getLogger(__name__)


def watch(ctx: Context, now: datetime | None = None) -> list[int]:
    """Record alerts for stale sources and store disk use (once per alert interval)."""
    now = now or utcnow()
    interval = timedelta(seconds=ctx.config.mail.alert_interval if ctx.config.mail else 3600)
    recorded = []

    def once(
        kind: str, key: str, message: str, host: str | None = None, source: str | None = None
    ) -> None:
        if not ctx.catalogue.alert_since(key, now - interval):
            recorded.append(
                ctx.catalogue.record_alert(kind, message, host=host, source=source, dedup_key=key)
            )

    for row in status_rows(ctx):
        # "stopped being backed up": a source that never succeeded is not alerted as stale
        # (a fresh install would alert everything; its failures alert on their own)
        if row["stale"] and row["last_success"] is not None:
            label = f"{row['host']}/{row['source']}"
            since = row["last_success"] or "never"
            message = f"{label}: stale: no successful backup since {since}"
            once("source_stale", f"stale:{label}", message, row["host"], row["source"])
    level, percent = disk_level(ctx)
    if level is not None:
        store = ctx.config.store.path
        once(
            f"disk_{level}",
            f"disk:{level}",
            f"store {store}: file system {percent:.0f}% full ({level} threshold reached)",
        )
    return recorded


def disk_level(ctx: Context) -> tuple[str | None, float]:
    cfg = ctx.config.alerts
    try:
        percent = StoreDisk.of(ctx.config.store.path).full_percent
    except OSError:
        return None, 0.0
    if percent >= cfg.disk_critical_percent:
        return "critical", percent
    if percent >= cfg.disk_warn_percent:
        return "warning", percent
    return None, percent


Sender = Callable[[EmailMessage], None]


def dispatch(
    ctx: Context,
    send: Sender | None = None,
    now: datetime | None = None,
    failures: list[str] | None = None,
) -> int:
    """Mail unsent alerts, one mail per key; returns how many mails went out. A key that
    another sender holds is left to it (its later events wait for the next look). A failed
    send's error line is added to ``failures``."""
    mail = ctx.config.mail
    if mail is None:
        return 0
    if send is None:

        def send(msg: EmailMessage) -> None:
            send_message(mail, msg, list(mail.to))

    now = now or utcnow()
    token = claim_token()
    keys = dict.fromkeys(group_key(e) for e in ctx.catalogue.unsent_alerts())  # oldest first
    mailed = 0
    for key in keys:
        if not ctx.catalogue.claim_alert_key(key, token, claim_lease(mail)):
            log.info("alerts %s: another sender is mailing them", key)
            continue
        try:
            outcome = _mail_key(ctx, mail, key, token, send, now)
        finally:
            ctx.catalogue.release_alert_key(key, token)
        if isinstance(outcome, str):
            if failures is not None:
                failures.append(outcome)
            break  # the mail server is down: the rest wait for the next look
        mailed += outcome
    return mailed


def _mail_key(
    ctx: Context, mail: MailConfig, key: str, token: str, send: Sender, now: datetime
) -> int | str:
    """With ``key`` held: claim its unsent events, then fold them (mailed within the
    interval) or mail them. How many mails went out (0 or 1), or the failed send's error."""
    events = ctx.catalogue.claim_alerts(key, token, claim_lease(mail))
    if not events:
        return 0  # another sender mailed them between our look and our claim
    ids = [e.id for e in events]
    last = ctx.catalogue.last_mailed(key)
    if last is not None and now - last < timedelta(seconds=mail.alert_interval):
        ctx.catalogue.alerts_mailed(ids, token, now, f"{SUPPRESSED}mailed at {last.isoformat()}")
        return 0
    try:
        send(alert_message(mail.sender, list(mail.to), events))
    except BackupdError as e:
        ctx.catalogue.alerts_failed(ids, token, str(e))
        log.error("alert mail failed (kept, retried later): %s", e)
        return str(e)
    ctx.catalogue.alerts_mailed(ids, token, now)
    return 1


def alert_message(sender: str, to: list[str], events: list[AlertEvent]) -> EmailMessage:
    title, body = alert_text(events)
    msg = EmailMessage()
    msg["Subject"] = title
    msg["From"], msg["To"] = sender, ", ".join(to)
    msg.set_content(body)
    return msg


def alert_text(events: list[AlertEvent]) -> tuple[str, str]:
    """(title, body) of one message for events of one key, oldest first: the title names
    the newest; mail and chat say the same."""
    first = events[-1]
    where = "/".join(p for p in (first.host, first.source) if p) or "backupd"
    title = f"[backupd] {first.kind.replace('_', ' ')}: {where}"
    lines = [f"{e.created_at.isoformat(timespec='seconds')}  {e.message}" for e in events]
    more = f"\n({len(events)} alerts with the same cause)" if len(events) > 1 else ""
    return title, "\n".join(lines) + more + "\n\nbackupctl status shows the whole fleet.\n"
