"""Catalogue records of alert delivery to chat and push services (Apprise URLs, issue 17,
decision 0027): per channel, which alerts went out, which wait, who is sending what.

Mail keeps its delivery state on ``alert_events`` itself (one channel, older). Each Apprise
URL is a *channel* here, named by a fingerprint of its URL (the URL holds a token and is
never stored): an alert is delivered, folded or failed per channel, so a chat server that
is down holds back nothing of the mail, nor of another chat, and receives its queue once
when it is back. Claims work as for mail (decision 0012): one sender per (channel, key)
decides send or fold, and marks the alert rows it sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    ForeignKey,
    String,
    Text,
    Update,
    and_,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from backupd.catalogue.claims import RELEASED, changed, claimable, held_by
from backupd.catalogue.jobs import HasSession
from backupd.catalogue.models import AlertEvent, Base, Claimed, UTCDateTime, utcnow


class AlertChannel(Base):
    """One chat or push service alerts go to; alerts recorded before ``since`` are not
    sent to it (a URL added today does not receive the last year's alerts)."""

    __tablename__ = "alert_channels"
    channel: Mapped[str] = mapped_column(String(64), primary_key=True)  # apprise:<sha256[:16]>
    label: Mapped[str] = mapped_column(String(255))  # scheme://host, nothing secret
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)  # its last dispatch: configured


class ChannelKey(Claimed, Base):
    """Held by the one sender deciding, for a channel and dedup key, send or fold."""

    __tablename__ = "alert_channel_keys"
    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(255), primary_key=True)


class AlertSend(Claimed, Base):
    """An alert's delivery to one channel: claimed while being sent, ``sent_at`` once it
    went out (``last_error`` then says if it was folded into an earlier message)."""

    __tablename__ = "alert_sends"
    alert_id: Mapped[int] = mapped_column(ForeignKey("alert_events.id"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


def _group(key: str) -> ColumnElement[bool]:
    return func.coalesce(AlertEvent.dedup_key, AlertEvent.kind) == key


def _sent_on(channel: str) -> ColumnElement[bool]:
    """The alert went out on ``channel`` (sent or folded)."""
    return exists().where(
        AlertSend.alert_id == AlertEvent.id,
        AlertSend.channel == channel,
        AlertSend.sent_at.is_not(None),
    )


def _held(channel: str, ids: Sequence[int], token: str) -> Update:
    """An UPDATE of these deliveries on ``channel`` that this sender holds."""
    return (
        update(AlertSend)
        .where(AlertSend.channel == channel, AlertSend.alert_id.in_(ids))
        .where(held_by(AlertSend, token))
    )


class ChannelRecords:
    """Mixed into Catalogue."""

    def open_channel(
        self: HasSession,
        channel: str,
        label: str,
        now: datetime,
        start: datetime,
        last_look: datetime | None,
    ) -> datetime:
        """Mark the channel seen ``now`` and return its ``since``: ``start`` for a channel
        new, or back after the last look passed it by (a URL removed, then put back: what
        it missed meanwhile is not sent to it); otherwise what it had. A concurrent first
        use is no error."""
        with self.session() as s:
            row = s.get(AlertChannel, channel)
            if row is not None:
                if last_look is not None and row.seen_at < last_look:
                    row.since = max(row.since, start)
                row.label, row.seen_at = label, now
                return row.since
        try:
            with self.session() as s:
                s.add(AlertChannel(channel=channel, label=label, since=start, seen_at=now))
        except IntegrityError:
            pass  # another sender opened it first
        with self.session() as s:
            found: datetime = s.get_one(AlertChannel, channel).since
            return found

    def last_look(self: HasSession) -> datetime | None:
        """When the newest dispatch looked (None: none ever did)."""
        with self.session() as s:
            value: datetime | None = s.scalar(select(func.max(AlertChannel.seen_at)))
            return value

    def oldest_owed(self: HasSession, chats: Sequence[AlertChannel]) -> datetime | None:
        """When the oldest alert still owed to one of ``chats`` was recorded (None: none
        is): a service that takes over from them (a rotated token) starts there."""
        owed = [and_(AlertEvent.created_at >= c.since, ~_sent_on(c.channel)) for c in chats]
        if not owed:
            return None
        with self.session() as s:
            value: datetime | None = s.scalar(
                select(func.min(AlertEvent.created_at)).where(or_(*owed))
            )
            return value

    def channel_unsent(self: HasSession, channel: str, since: datetime) -> list[AlertEvent]:
        """Alerts recorded since ``since`` not yet sent (nor folded) on ``channel``, oldest
        first."""
        query = select(AlertEvent).where(AlertEvent.created_at >= since, ~_sent_on(channel))
        with self.session() as s:
            return list(s.scalars(query.order_by(AlertEvent.id)))

    def claim_channel_key(
        self: HasSession, channel: str, key: str, token: str, lease: timedelta
    ) -> bool:
        """Claim the right to send (or fold) ``key``'s alerts on ``channel``: one
        conditional UPDATE; False while another sender's lease runs."""
        now = utcnow()
        try:
            with self.session() as s:
                if s.get(ChannelKey, (channel, key)) is None:
                    s.add(ChannelKey(channel=channel, dedup_key=key))
        except IntegrityError:
            pass  # another sender made the row first
        claim = (
            update(ChannelKey)
            .where(ChannelKey.channel == channel, ChannelKey.dedup_key == key)
            .where(claimable(ChannelKey, now - lease))
            .values(claimed_by=token, claimed_at=now)
        )
        with self.session() as s:
            return changed(s, claim) == 1

    def release_channel_key(self: HasSession, channel: str, key: str, token: str) -> None:
        with self.session() as s:
            changed(
                s,
                update(ChannelKey)
                .where(ChannelKey.channel == channel, ChannelKey.dedup_key == key)
                .where(held_by(ChannelKey, token))
                .values(RELEASED),
            )

    def claim_channel_alerts(
        self: HasSession, channel: str, key: str, token: str, lease: timedelta, since: datetime
    ) -> list[AlertEvent]:
        """Claim ``key``'s alerts not yet sent on ``channel`` (a delivery row each, made if
        missing, then one conditional UPDATE); the ones this sender won, oldest first."""
        now = utcnow()
        waiting = select(AlertEvent.id).where(
            _group(key), AlertEvent.created_at >= since, ~_sent_on(channel)
        )
        missing = waiting.where(
            ~exists().where(AlertSend.alert_id == AlertEvent.id, AlertSend.channel == channel)
        ).with_only_columns(AlertEvent.id, literal(channel), literal(0))
        try:
            with self.session() as s:
                s.execute(
                    insert(AlertSend).from_select(["alert_id", "channel", "attempts"], missing)
                )
        except IntegrityError:
            pass  # a sender whose lease ran out made some of them: they exist
        claim = (
            update(AlertSend)
            .where(AlertSend.channel == channel, AlertSend.sent_at.is_(None))
            .where(AlertSend.alert_id.in_(waiting), claimable(AlertSend, now - lease))
            .values(claimed_by=token, claimed_at=now)
        )
        with self.session() as s:
            changed(s, claim)
        won = select(AlertEvent).join(
            AlertSend,
            and_(AlertSend.alert_id == AlertEvent.id, AlertSend.channel == channel),
        )
        won = won.where(held_by(AlertSend, token), AlertSend.sent_at.is_(None))
        with self.session() as s:
            return list(s.scalars(won.order_by(AlertEvent.id)))

    def channel_last_sent(self: HasSession, channel: str, key: str) -> datetime | None:
        """When an alert with this key last went out on ``channel`` (not merely folded)."""
        query = (
            select(func.max(AlertSend.sent_at))
            .join(AlertEvent, AlertEvent.id == AlertSend.alert_id)
            .where(AlertSend.channel == channel, _group(key))
            .where(AlertSend.sent_at.is_not(None), AlertSend.last_error.is_(None))
        )
        with self.session() as s:
            value: datetime | None = s.scalar(query)
            return value

    def channel_sent(
        self: HasSession,
        channel: str,
        ids: Sequence[int],
        token: str,
        when: datetime,
        note: str | None = None,
    ) -> None:
        """Mark claimed deliveries sent at ``when`` (``note``: folded, not sent), release."""
        with self.session() as s:
            s.execute(_held(channel, ids, token).values(sent_at=when, last_error=note, **RELEASED))

    def channel_failed(
        self: HasSession, channel: str, ids: Sequence[int], token: str, error: str
    ) -> None:
        """Release claimed deliveries after a failed send: tried again at the next look."""
        failed = {"attempts": AlertSend.attempts + 1, "last_error": error, **RELEASED}
        with self.session() as s:
            s.execute(_held(channel, ids, token).values(failed))

    def deliveries(self: HasSession, ids: Sequence[int]) -> dict[int, list[AlertSend]]:
        """The chat deliveries of these alerts, by alert id (what ``alerts`` shows)."""
        query = select(AlertSend).where(AlertSend.alert_id.in_(ids)).order_by(AlertSend.channel)
        found: dict[int, list[AlertSend]] = {}
        with self.session() as s:
            for row in s.scalars(query):
                found.setdefault(row.alert_id, []).append(row)
        return found

    def current_channels(self: HasSession) -> list[AlertChannel]:
        """The services the newest dispatch looked at (each dispatch marks every service it
        has with one time): those configured now, without reading ``urls_from`` again."""
        newest = select(func.max(AlertChannel.seen_at)).scalar_subquery()
        query = select(AlertChannel).where(AlertChannel.seen_at == newest)
        with self.session() as s:
            return list(s.scalars(query.order_by(AlertChannel.label)))

    def undelivered_count(self: HasSession, mail: bool, chats: Sequence[AlertChannel]) -> int:
        """How many alerts still wait for a channel: mail (if ``mail``) or one of ``chats``
        (``backupd_alerts_pending``)."""
        waiting = [and_(AlertEvent.created_at >= c.since, ~_sent_on(c.channel)) for c in chats]
        if mail:
            waiting.append(AlertEvent.sent_at.is_(None))
        if not waiting:
            return 0
        with self.session() as s:
            return int(s.scalar(select(func.count(AlertEvent.id)).where(or_(*waiting))) or 0)
