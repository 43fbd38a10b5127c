"""Catalogue records of the weekly report: the mail queue (``reports``), and the questions
the report asks about a period (failures, drills, archive sizes over time)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select

from backupd.catalogue.jobs import HasSession
from backupd.catalogue.models import (
    Archive,
    Drill,
    DrillStatus,
    Host,
    MaintenanceRun,
    Report,
    Run,
    RunStatus,
    Source,
    utcnow,
)

QUEUED = "queued"
SENT = "sent"
UNSENT = "unsent"  # built without a [mail] table: kept, never delivered
FINISHED_DRILLS = (DrillStatus.PASS, DrillStatus.WARN, DrillStatus.FAIL)
BAD_RUNS = (RunStatus.FAILED, RunStatus.INTERRUPTED)


@dataclass(frozen=True)
class ArchivePoint:
    host: str
    source: str
    repository: str
    created_at: datetime
    original: int
    deduplicated: int
    pruned_at: datetime | None


@dataclass(frozen=True)
class Failure:
    host: str
    source: str
    at: datetime
    status: str
    error: str | None


class ReportRecords:
    """Mixed into Catalogue."""

    # -- the queue ----------------------------------------------------------------------
    def add_report(
        self: HasSession,
        *,
        period_start: datetime,
        period_end: datetime,
        verdict: str,
        subject: str,
        recipients: list[str],
        message: str,
        status: str,
    ) -> int:
        with self.session() as s:
            row = Report(created_at=utcnow(), period_start=period_start, period_end=period_end,
                         verdict=verdict, subject=subject, recipients=recipients, status=status,
                         attempts=0, message=message)  # fmt: skip
            s.add(row)
            s.flush()
            return row.id

    def newest_report(self: HasSession) -> Report | None:
        with self.session() as s:
            return s.scalar(select(Report).order_by(Report.id.desc()).limit(1))

    def report(self: HasSession, report_id: int) -> Report:
        with self.session() as s:
            return s.get_one(Report, report_id)

    def reports(self: HasSession, limit: int = 50) -> list[Report]:
        with self.session() as s:
            return list(s.scalars(select(Report).order_by(Report.id.desc()).limit(limit)))

    def queued_reports(self: HasSession, due_at: datetime | None = None) -> list[Report]:
        """Reports waiting for delivery, oldest first; with ``due_at`` only those whose next
        attempt is due by then."""
        query = select(Report).where(Report.status == QUEUED).order_by(Report.id)
        if due_at is not None:
            query = query.where(
                or_(Report.next_attempt_at.is_(None), Report.next_attempt_at <= due_at)
            )
        with self.session() as s:
            return list(s.scalars(query))

    def report_sent(self: HasSession, report_id: int) -> None:
        with self.session() as s:
            row = s.get_one(Report, report_id)
            row.status, row.sent_at, row.next_attempt_at = SENT, utcnow(), None
            row.attempts += 1

    def report_failed(self: HasSession, report_id: int, error: str, retry: float) -> Report:
        """One more failed attempt: the next one after ``retry`` seconds, doubled per
        attempt (capped at a day, so a long outage is still retried daily)."""
        with self.session() as s:
            row = s.get_one(Report, report_id)
            row.attempts += 1
            delay = min(retry * 2 ** (row.attempts - 1), 86400.0)
            row.last_error, row.next_attempt_at = error, utcnow() + timedelta(seconds=delay)
            return row

    # -- what the report tells ----------------------------------------------------------
    def archive_points(self: HasSession) -> list[ArchivePoint]:
        """Every archive recorded (pruned ones too: they made the store's past sizes)."""
        query = (
            select(Archive, Source.name, Host.name)
            .join(Source, Archive.source_id == Source.id)
            .join(Host, Source.host_id == Host.id)
            .order_by(Archive.created_at)
        )
        with self.session() as s:
            return [ArchivePoint(h, src, a.repository, a.created_at, a.original_size,
                                 a.deduplicated_size, a.pruned_at)
                    for a, src, h in s.execute(query)]  # fmt: skip

    def failures_between(self: HasSession, start: datetime, end: datetime) -> list[Failure]:
        """Backup runs that failed or were interrupted in [start, end), oldest first."""
        query = (
            select(Run, Source.name, Host.name)
            .join(Source, Run.source_id == Source.id)
            .join(Host, Source.host_id == Host.id)
            .where(Run.status.in_(BAD_RUNS), Run.started_at >= start, Run.started_at < end)
            .order_by(Run.started_at, Run.id)
        )
        with self.session() as s:
            return [Failure(h, src, r.started_at, r.status, r.error)
                    for r, src, h in s.execute(query)]  # fmt: skip

    def drills_between(self: HasSession, start: datetime, end: datetime) -> list[Drill]:
        """Finished restore drills that ended in [start, end), oldest first."""
        query = (
            select(Drill)
            .where(Drill.status.in_(FINISHED_DRILLS))
            .where(Drill.finished_at >= start, Drill.finished_at < end)
            .order_by(Drill.finished_at, Drill.id)
        )
        with self.session() as s:
            return list(s.scalars(query))

    def maintenance_problems(
        self: HasSession, start: datetime, end: datetime
    ) -> list[MaintenanceRun]:
        """Maintenance runs in [start, end) that failed or ended with a warning."""
        bad: tuple[Any, ...] = (RunStatus.FAILED, RunStatus.WARNING, RunStatus.INTERRUPTED)
        query = (
            select(MaintenanceRun)
            .where(MaintenanceRun.status.in_(bad))
            .where(MaintenanceRun.started_at >= start, MaintenanceRun.started_at < end)
            .order_by(MaintenanceRun.started_at, MaintenanceRun.id)
        )
        with self.session() as s:
            return list(s.scalars(query))
