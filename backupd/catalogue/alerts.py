"""Catalogue records of alert delivery: what is unsent, what was mailed when (per key)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update

from backupd.catalogue.jobs import HasSession
from backupd.catalogue.models import AlertEvent

SUPPRESSED = "suppressed: "  # last_error prefix of an alert folded into an earlier mail


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

    def alerts_mailed(
        self: HasSession, ids: Sequence[int], when: datetime, note: str | None = None
    ) -> None:
        with self.session() as s:
            s.execute(update(AlertEvent).where(AlertEvent.id.in_(ids))
                      .values(sent_at=when, last_error=note))  # fmt: skip

    def alerts_failed(self: HasSession, ids: Sequence[int], error: str) -> None:
        with self.session() as s:
            s.execute(update(AlertEvent).where(AlertEvent.id.in_(ids))
                      .values(attempts=AlertEvent.attempts + 1, last_error=error))  # fmt: skip
