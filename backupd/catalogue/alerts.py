"""Catalogue records of alert delivery: what is unsent, who is sending what (claims, decision
0012), what was mailed when (per key)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.exc import IntegrityError

from backupd.catalogue.claims import RELEASED, changed, claimable, held_by
from backupd.catalogue.jobs import HasSession
from backupd.catalogue.models import AlertEvent, AlertKey, utcnow

SUPPRESSED = "suppressed: "  # last_error prefix of an alert folded into an earlier mail


def group_key(event: AlertEvent) -> str:
    """The key events are grouped (and rate-limited) by: their dedup key, else their kind
    (events recorded before dedup keys existed)."""
    return event.dedup_key or event.kind


def _in_group(key: str) -> ColumnElement[bool]:
    return func.coalesce(AlertEvent.dedup_key, AlertEvent.kind) == key


class AlertRecords:
    """Mixed into Catalogue."""

    def unsent_alerts(self: HasSession) -> list[AlertEvent]:
        with self.session() as s:
            query = select(AlertEvent).where(AlertEvent.sent_at.is_(None)).order_by(AlertEvent.id)
            return list(s.scalars(query))

    def last_mailed(self: HasSession, key: str) -> datetime | None:
        """When an alert with this key last went out in a mail (not merely folded)."""
        with self.session() as s:
            query = select(func.max(AlertEvent.sent_at)).where(
                AlertEvent.dedup_key == key,
                AlertEvent.sent_at.is_not(None),
                AlertEvent.last_error.is_(None),
            )
            value: datetime | None = s.scalar(query)
            return value

    def alert_since(self: HasSession, key: str, since: datetime) -> bool:
        """Whether an alert with this key was recorded since ``since`` (watchers use it so a
        lasting condition is one alert per interval, not one per look)."""
        with self.session() as s:
            query = select(AlertEvent.id).where(
                AlertEvent.dedup_key == key, AlertEvent.created_at >= since
            )
            return s.scalar(query.limit(1)) is not None

    # -- claims: one sender per key decides mail or fold, and sends ----------------------
    def claim_alert_key(self: HasSession, key: str, token: str, lease: timedelta) -> bool:
        """Claim the right to mail (or fold) ``key``'s alerts: one conditional UPDATE of its
        ``alert_keys`` row. True if this sender won; False while another holds it (and its
        ``lease`` runs). The rate limit needs this: two senders each holding different
        events of one key would otherwise both find no recent mail and both send."""
        now = utcnow()
        _ensure_key(self, key)
        claim = (
            update(AlertKey)
            .where(AlertKey.dedup_key == key, claimable(AlertKey, now - lease))
            .values(claimed_by=token, claimed_at=now)
        )
        with self.session() as s:
            return changed(s, claim) == 1

    def release_alert_key(self: HasSession, key: str, token: str) -> None:
        with self.session() as s:
            changed(
                s,
                update(AlertKey)
                .where(AlertKey.dedup_key == key, held_by(AlertKey, token))
                .values(RELEASED),
            )

    def claim_alerts(self: HasSession, key: str, token: str, lease: timedelta) -> list[AlertEvent]:
        """Claim ``key``'s unsent events with one conditional UPDATE (those not claimed by a
        sender whose lease runs), then read back, oldest first, the ones this sender won:
        only those go into its mail."""
        now = utcnow()
        claim = (
            update(AlertEvent)
            .where(_in_group(key), AlertEvent.sent_at.is_(None))
            .where(claimable(AlertEvent, now - lease))
            .values(claimed_by=token, claimed_at=now)
        )
        with self.session() as s:
            changed(s, claim)
        won = select(AlertEvent).where(
            held_by(AlertEvent, token), _in_group(key), AlertEvent.sent_at.is_(None)
        )
        with self.session() as s:
            return list(s.scalars(won.order_by(AlertEvent.id)))

    def alerts_mailed(
        self: HasSession,
        ids: Sequence[int],
        token: str,
        when: datetime,
        note: str | None = None,
    ) -> None:
        """Mark claimed events sent at ``when`` (``note``: folded, not mailed) and release."""
        with self.session() as s:
            s.execute(
                update(AlertEvent)
                .where(AlertEvent.id.in_(ids), held_by(AlertEvent, token))
                .values(sent_at=when, last_error=note, **RELEASED)
            )

    def alerts_failed(self: HasSession, ids: Sequence[int], token: str, error: str) -> None:
        """Release claimed events after a failed send: unsent, tried again at the next look."""
        with self.session() as s:
            s.execute(
                update(AlertEvent)
                .where(AlertEvent.id.in_(ids), held_by(AlertEvent, token))
                .values(attempts=AlertEvent.attempts + 1, last_error=error, **RELEASED)
            )


def _ensure_key(cat: HasSession, key: str) -> None:
    """The key's row exists (made at its first alert); a concurrent insert is no error."""
    with cat.session() as s:
        if s.get(AlertKey, key) is not None:
            return
    try:
        with cat.session() as s:
            s.add(AlertKey(dedup_key=key))
    except IntegrityError:
        pass  # another sender made it first: it exists, which is all we need
