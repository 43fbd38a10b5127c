"""Catalogue questions `backupctl` asks about the past: runs, restore points, sizes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from backupd.catalogue.jobs import HasSession
from backupd.catalogue.models import Archive, Host, Run, RunStatus, Source


@dataclass(frozen=True)
class RunRow:
    id: int
    host: str
    source: str
    trigger: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    nbytes: int
    error: str | None


@dataclass(frozen=True)
class ArchiveRow:
    host: str
    source: str
    name: str
    item: str
    created_at: datetime
    nbytes: int
    sha256: str
    original_size: int
    deduplicated_size: int
    run_id: int | None
    verified_at: datetime | None
    pruned_at: datetime | None


@dataclass(frozen=True)
class ItemPoint:
    """An item's newest restore point."""

    item: str
    archive: str
    created_at: datetime
    archives: int  # live archives of this item
    original: int = 0  # bytes they hold, before compression and deduplication
    deduplicated: int = 0  # bytes they added to the repository when each was made


@dataclass(frozen=True)
class Sizes:
    archives: int
    original: int  # what the live archives hold, before compression and deduplication
    deduplicated: int  # what they added to the repository when each was made

    @classmethod
    def of(cls, items: Sequence[ItemPoint]) -> Sizes:
        """A source's sizes: the sum over its items' live archives."""
        return cls(
            sum(i.archives for i in items),
            sum(i.original for i in items),
            sum(i.deduplicated for i in items),
        )


class HistoryQueries:
    """Mixed into Catalogue."""

    def run_history(
        self: HasSession,
        host: str | None = None,
        source: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[RunRow]:
        """Runs, newest first, filtered by any of host, source, status, start time."""
        query = (
            select(Run, Source.name, Host.name)
            .join(Source, Run.source_id == Source.id)
            .join(Host, Source.host_id == Host.id)
            .order_by(Run.id.desc())
            .limit(limit)
        )
        if host is not None:
            query = query.where(Host.name == host)
        if source is not None:
            query = query.where(Source.name == source)
        if status is not None:
            query = query.where(Run.status == status)
        if since is not None:
            query = query.where(Run.started_at >= since)
        with self.session() as s:
            return [
                RunRow(
                    r.id,
                    h,
                    src,
                    r.trigger,
                    r.status,
                    r.started_at,
                    r.finished_at,
                    r.nbytes,
                    r.error,
                )
                for r, src, h in s.execute(query)
            ]

    def archive_rows(
        self: HasSession, host: str, source: str | None = None, include_pruned: bool = False
    ) -> list[ArchiveRow]:
        """Restore points of a host (or one source), newest first."""
        query = (
            select(Archive, Source.name)
            .join(Source, Archive.source_id == Source.id)
            .join(Host, Source.host_id == Host.id)
            .where(Host.name == host)
            .order_by(Archive.created_at.desc(), Archive.id.desc())
        )
        if source is not None:
            query = query.where(Source.name == source)
        if not include_pruned:
            query = query.where(Archive.pruned_at.is_(None))
        with self.session() as s:
            return [
                ArchiveRow(
                    host,
                    src,
                    a.name,
                    a.item,
                    a.created_at,
                    a.nbytes,
                    a.sha256,
                    a.original_size,
                    a.deduplicated_size,
                    a.run_id,
                    a.verified_at,
                    a.pruned_at,
                )
                for a, src in s.execute(query)
            ]

    def incomplete_runs(
        self: HasSession, host: str, source: str, after: datetime | None, until: datetime | None
    ) -> list[RunRow]:
        """Runs of a source that failed or were interrupted after archiving part of their
        set, started in (after, until]: restore points that look newer but are not whole."""
        query = (
            select(Run, Source.name, Host.name)
            .join(Source, Run.source_id == Source.id)
            .join(Host, Source.host_id == Host.id)
            .where(Host.name == host, Source.name == source)
            .where(Run.status.in_((RunStatus.FAILED, RunStatus.INTERRUPTED)))
            .where(Run.id.in_(select(Archive.run_id).where(Archive.pruned_at.is_(None))))
            .order_by(Run.started_at.desc())
        )
        if after is not None:
            query = query.where(Run.started_at > after)
        if until is not None:
            query = query.where(Run.started_at <= until)
        with self.session() as s:
            return [
                RunRow(
                    r.id,
                    h,
                    src,
                    r.trigger,
                    r.status,
                    r.started_at,
                    r.finished_at,
                    r.nbytes,
                    r.error,
                )
                for r, src, h in s.execute(query)
            ]

    def newest_per_item(self: HasSession) -> dict[tuple[str, str], list[ItemPoint]]:
        """Per (host, source): each item's newest live archive, whatever its run's outcome
        (every archive is sealed and checked on restore: a good restore point of its item),
        with how many live archives the item has and their sizes (``Sizes.of`` adds a
        source up). One query for the whole fleet, read from the partial index
        ix_archives_live."""
        newest = (
            select(
                Archive.source_id,
                Archive.item,
                func.max(Archive.created_at).label("at"),
                func.count(Archive.id).label("n"),
                func.coalesce(func.sum(Archive.original_size), 0).label("original"),
                func.coalesce(func.sum(Archive.deduplicated_size), 0).label("deduplicated"),
            )
            .where(Archive.pruned_at.is_(None))
            .group_by(Archive.source_id, Archive.item)
            .subquery()
        )
        query = (
            select(
                Host.name,
                Source.name,
                newest.c.item,
                Archive.created_at,
                newest.c.n,
                Archive.name,
                newest.c.original,
                newest.c.deduplicated,
            )
            .join(Source, Source.id == newest.c.source_id)
            .join(Host, Source.host_id == Host.id)
            .join(
                Archive,
                (Archive.source_id == newest.c.source_id)
                & (Archive.item == newest.c.item)
                & (Archive.created_at == newest.c.at)
                & Archive.pruned_at.is_(None),  # so the partial index ix_archives_live serves it
            )
            .order_by(Host.name, Source.name, newest.c.item)
        )
        found: dict[tuple[str, str], list[ItemPoint]] = {}
        with self.session() as s:
            # int(): PostgreSQL sums bigint as numeric (Decimal)
            for h, src, item, at, n, name, orig, dedup in s.execute(query):
                point = ItemPoint(item, name, at, int(n), int(orig), int(dedup))
                found.setdefault((h, src), []).append(point)
        return found
