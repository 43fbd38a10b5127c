"""Catalogue records of the weekly report: the mail queue (``reports``), and the questions
the report asks about a period (failures, drills, archive sizes over time)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update

from backupd.catalogue.claims import RELEASED, changed, claimable, held_by
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
            row = Report(
                created_at=utcnow(),
                period_start=period_start,
                period_end=period_end,
                verdict=verdict,
                subject=subject,
                recipients=recipients,
                status=status,
                attempts=0,
                message=message,
            )
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
        attempt is due by then. Reading is not a licence to send: claim_report first."""
        query = select(Report).where(Report.status == QUEUED).order_by(Report.id)
        if due_at is not None:
            query = query.where(_due(due_at))
        with self.session() as s:
            return list(s.scalars(query))

    def claim_report(
        self: HasSession,
        report_id: int,
        token: str,
        lease: timedelta,
        due_at: datetime | None = None,
    ) -> Report | None:
        """Claim a queued report for sending with one conditional UPDATE: still queued, not
        claimed by anyone whose ``lease`` is still running, and (with ``due_at``) due. The
        report as claimed if this sender won it; None if another sender holds it, or it was
        sent or put off meanwhile."""
        now = utcnow()
        claim = (
            update(Report)
            .where(Report.id == report_id, Report.status == QUEUED)
            .where(claimable(Report, now - lease))
            .values(claimed_by=token, claimed_at=now)
        )
        if due_at is not None:
            claim = claim.where(_due(due_at))
        with self.session() as s:
            if changed(s, claim) != 1:
                return None
        with self.session() as s:
            return s.get_one(Report, report_id)

    def report_sent(self: HasSession, report_id: int, token: str) -> bool:
        """Mark a report sent and drop the claim. False if this sender no longer held the
        claim (it outlived its lease and another sender took it over): the report is marked
        sent all the same, since it was, and the other sender may have mailed it too."""
        values = {
            "status": SENT,
            "sent_at": utcnow(),
            "next_attempt_at": None,
            "attempts": Report.attempts + 1,
            **RELEASED,
        }
        mark = update(Report).where(Report.id == report_id, Report.status == QUEUED)
        with self.session() as s:
            if changed(s, mark.where(held_by(Report, token)).values(values)) == 1:
                return True
            changed(s, mark.values(values))
            return False

    def report_failed(
        self: HasSession, report_id: int, token: str | None, error: str, retry: float
    ) -> Report | None:
        """Release a claimed report after a failed attempt (``token`` None: an unclaimed one):
        the next attempt after ``retry`` seconds, doubled per attempt (capped at a day, so a
        long outage is still retried daily). None if this sender no longer held it."""
        with self.session() as s:
            attempts = s.scalar(select(Report.attempts).where(Report.id == report_id)) or 0
            delay = min(retry * 2**attempts, 86400.0)
            release = (
                update(Report)
                .where(Report.id == report_id, held_by(Report, token))
                .values(
                    attempts=attempts + 1,
                    last_error=error,
                    next_attempt_at=utcnow() + timedelta(seconds=delay),
                    **RELEASED,
                )
            )
            if changed(s, release) != 1:
                return None
        with self.session() as s:
            return s.get_one(Report, report_id)

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
            return [
                ArchivePoint(
                    h,
                    src,
                    a.repository,
                    a.created_at,
                    a.original_size,
                    a.deduplicated_size,
                    a.pruned_at,
                )
                for a, src, h in s.execute(query)
            ]

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
            return [
                Failure(h, src, r.started_at, r.status, r.error) for r, src, h in s.execute(query)
            ]

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

    def maintenance_verdicts(self: HasSession, end: datetime) -> list[MaintenanceRun]:
        """Per (job, host), the newest run started before ``end`` that ended on its own
        (succeeded, warning or failed): how the job stands. An interrupted run (a stop,
        the end of the off-site window) says nothing of it, and a running one nothing yet."""
        ended = (RunStatus.SUCCEEDED, RunStatus.WARNING, RunStatus.FAILED)
        newest = (
            select(func.max(MaintenanceRun.id))
            .where(MaintenanceRun.status.in_(ended), MaintenanceRun.started_at < end)
            .group_by(MaintenanceRun.job, MaintenanceRun.host)
        )
        query = select(MaintenanceRun).where(MaintenanceRun.id.in_(newest))
        with self.session() as s:
            return list(s.scalars(query.order_by(MaintenanceRun.id)))


def _due(at: datetime) -> ColumnElement[bool]:
    return or_(Report.next_attempt_at.is_(None), Report.next_attempt_at <= at)
