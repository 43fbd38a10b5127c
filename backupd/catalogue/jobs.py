"""Catalogue records of the daemon's work besides backups: maintenance runs, the job queue,
and what maintenance learns about archives (pruned, data checked)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from backupd.catalogue.models import (
    Archive,
    Host,
    MaintenanceRun,
    QueuedJob,
    Run,
    RunStatus,
    Source,
    utcnow,
)
from backupd.catalogue.versions import forget_unheld

GOOD = (RunStatus.SUCCEEDED, RunStatus.WARNING)


class HasSession(Protocol):
    """What the Catalogue mixins need of the Catalogue: transactions."""

    def session(self) -> AbstractContextManager[Session]: ...


class JobRecords:
    """Mixed into Catalogue."""

    # -- maintenance runs -------------------------------------------------------------
    def start_maintenance(self: HasSession, job: str, host: str | None, trigger: str) -> int:
        with self.session() as s:
            row = MaintenanceRun(
                job=job,
                host=host,
                trigger=trigger,
                status=RunStatus.RUNNING,
                started_at=utcnow(),
                pid=os.getpid(),
            )
            s.add(row)
            s.flush()
            return row.id

    def finish_maintenance(
        self: HasSession,
        run_id: int,
        status: RunStatus,
        *,
        summary: str | None = None,
        error: str | None = None,
        stderr_tail: str | None = None,
    ) -> None:
        with self.session() as s:
            row = s.get_one(MaintenanceRun, run_id)
            row.status, row.finished_at = status, utcnow()
            row.summary, row.error, row.stderr_tail = summary, error, stderr_tail or None

    def running_maintenance(self: HasSession) -> list[MaintenanceRun]:
        with self.session() as s:
            query = select(MaintenanceRun).where(MaintenanceRun.status == RunStatus.RUNNING)
            return list(s.scalars(query))

    def maintenance_runs(self: HasSession, limit: int = 50) -> list[MaintenanceRun]:
        with self.session() as s:
            query = select(MaintenanceRun).order_by(MaintenanceRun.id.desc()).limit(limit)
            return list(s.scalars(query))

    def last_good_maintenance(
        self: HasSession, job: str, first: bool = False
    ) -> dict[str | None, datetime]:
        """Per host (None: the whole store), when ``job`` last finished well (succeeded
        or with a warning); ``first``: when it first did."""
        finished = (func.min if first else func.max)(MaintenanceRun.finished_at)
        query = (
            select(MaintenanceRun.host, finished)
            .where(MaintenanceRun.job == job, MaintenanceRun.status.in_(GOOD))
            .group_by(MaintenanceRun.host)
        )
        with self.session() as s:
            return {host: when for host, when in s.execute(query) if when is not None}

    def last_maintenance(self: HasSession, job: str) -> dict[str | None, MaintenanceRun]:
        """Per host, the newest finished run of ``job`` (its status, summary, error)."""
        newest = (
            select(func.max(MaintenanceRun.id))
            .where(MaintenanceRun.job == job, MaintenanceRun.status != RunStatus.RUNNING)
            .group_by(MaintenanceRun.host)
        )
        with self.session() as s:
            rows = s.scalars(select(MaintenanceRun).where(MaintenanceRun.id.in_(newest)))
            return {r.host: r for r in rows}

    # -- the daemon's queue -------------------------------------------------------------
    def clear_queue(self: HasSession) -> None:
        with self.session() as s:
            s.execute(delete(QueuedJob))

    def enqueue(
        self: HasSession,
        job: str,
        host: str | None,
        source: str | None,
        trigger: str,
        attempt: int,
        not_before: datetime,
    ) -> int:
        with self.session() as s:
            row = QueuedJob(
                job=job,
                host=host,
                source=source,
                trigger=trigger,
                state="queued",
                attempt=attempt,
                enqueued_at=utcnow(),
                not_before=not_before,
            )
            s.add(row)
            s.flush()
            return row.id

    def mark_started(self: HasSession, queue_id: int, pid: int) -> None:
        with self.session() as s:
            s.execute(
                update(QueuedJob)
                .where(QueuedJob.id == queue_id)
                .values(state="running", pid=pid, started_at=utcnow())
            )

    def dequeue(self: HasSession, queue_id: int) -> None:
        with self.session() as s:
            s.execute(delete(QueuedJob).where(QueuedJob.id == queue_id))

    def queued_jobs(self: HasSession) -> list[QueuedJob]:
        with self.session() as s:
            return list(s.scalars(select(QueuedJob).order_by(QueuedJob.not_before)))

    # -- what maintenance needs -----------------------------------------------------
    def last_success(self: HasSession, host: str, source: str) -> datetime | None:
        with self.session() as s:
            query = (
                select(Run.started_at)
                .join(Source, Run.source_id == Source.id)
                .join(Host, Source.host_id == Host.id)
                .where(Host.name == host, Source.name == source, Run.status.in_(GOOD))
                .order_by(Run.started_at.desc())
                .limit(1)
            )
            return s.scalar(query)

    def live_archives(self: HasSession, repository: str) -> list[Archive]:
        """Archives of a repository not yet pruned, newest first."""
        with self.session() as s:
            query = (
                select(Archive)
                .where(Archive.repository == repository, Archive.pruned_at.is_(None))
                .order_by(Archive.created_at.desc())
            )
            return list(s.scalars(query))

    def mark_pruned(self: HasSession, repository: str, names: Sequence[str]) -> None:
        """Stamp the archives pruned, and forget the file versions no live archive holds."""
        _stamp(self, repository, names, pruned_at=utcnow())
        if names:
            with self.session() as s:
                forget_unheld(s, repository)

    def mark_data_checked(self: HasSession, repository: str, names: Sequence[str]) -> None:
        _stamp(self, repository, names, data_checked_at=utcnow())

    def mark_verified(self: HasSession, repository: str, names: Sequence[str]) -> None:
        _stamp(self, repository, names, verified_at=utcnow())


def _stamp(cat: HasSession, repository: str, names: Sequence[str], **values: datetime) -> None:
    if not names:
        return
    with cat.session() as s:
        s.execute(
            update(Archive)
            .where(Archive.repository == repository, Archive.name.in_(list(names)))
            .values(**values)
        )


ID_BATCH = 900  # ids per IN (...): under every SQLite's limit of bound parameters


def batches(ids: Iterable[int]) -> Iterator[list[int]]:
    todo = sorted(set(ids))
    for start in range(0, len(todo), ID_BATCH):
        yield todo[start : start + ID_BATCH]
