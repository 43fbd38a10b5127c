"""Catalogue records of restores (and the reconciliation of ones a crash cut short)."""

from __future__ import annotations

import getpass
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select

from backupd.catalogue.jobs import HasSession, batches
from backupd.catalogue.models import (
    Archive,
    Check,
    Drill,
    DrillStatus,
    Restore,
    RunStatus,
    utcnow,
)


def operator_name() -> str:
    """Who ran the restore: the sudo caller if any, else the login."""
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


@dataclass(frozen=True)
class DrillVerdict:
    """A finished restore drill's verdict, as `status` and the report show it."""

    host: str
    source: str
    archive: str
    status: str  # pass, warn or fail
    finished_at: datetime | None
    rto_seconds: float | None  # seconds from the first byte read to a verified restore
    detail: str | None
    checks: list[dict[str, Any]]


_drilled = and_(Archive.repository == Drill.repository, Archive.name == Drill.archive)
_WORST = {DrillStatus.FAIL: 2, DrillStatus.WARN: 1}


def _per_point(anchors: Sequence[Any], items: Sequence[Any]) -> dict[tuple[str, str], DrillVerdict]:
    """One verdict per source for the restore point of its newest drill (``anchors``): a
    source of several items (a cluster's globals and each database) is restored only when
    every item is, so the worst item's verdict stands and the restore time is their sum,
    each item's newest drill. Rows: the verdict's columns, the drill's id, the archive's run."""
    by_point: dict[tuple[str, str, int], list[Any]] = {}
    for r in items:
        by_point.setdefault((r.host, r.source, r.run_id), []).append(r)
    found: dict[tuple[str, str], DrillVerdict] = {}
    for a in anchors:
        newest = {a.archive: a}
        for r in by_point.get((a.host, a.source, a.run_id), []):
            if r.archive not in newest or r.id > newest[r.archive].id:
                newest[r.archive] = r
        rows = list(newest.values())
        worst = max(rows, key=lambda r: (_WORST.get(r.status, 0), r is a, r.id))
        times = [r.rto_seconds for r in rows if r.rto_seconds is not None]
        ended = [r.finished_at for r in rows if r.finished_at is not None]
        found[(a.host, a.source)] = DrillVerdict(
            a.host,
            a.source,
            worst.archive,
            worst.status,
            max(ended) if ended else None,
            sum(times) if times else None,
            worst.detail,
            [c for r in rows for c in (r.checks or [])],
        )
    return found


class RestoreRecords:
    """Mixed into Catalogue."""

    def start_restore(
        self: HasSession,
        host: str,
        source: str,
        archives: Sequence[str],
        target_kind: str,
        target: str,
    ) -> int:
        with self.session() as s:
            row = Restore(
                host=host,
                source=source,
                archives=list(archives),
                target_kind=target_kind,
                target=target,
                status=RunStatus.RUNNING,
                started_at=utcnow(),
                pid=os.getpid(),
                operator=operator_name(),
                nbytes=0,
                checks=[],
            )
            s.add(row)
            s.flush()
            return row.id

    def finish_restore(
        self: HasSession,
        restore_id: int,
        status: RunStatus,
        *,
        nbytes: int = 0,
        seconds: float | None = None,
        checks: Sequence[Check] = (),
        error: str | None = None,
    ) -> None:
        recorded = [c.as_json() for c in checks]
        with self.session() as s:
            row = s.get_one(Restore, restore_id)
            row.status, row.finished_at = status, utcnow()
            row.nbytes, row.seconds, row.checks, row.error = nbytes, seconds, recorded, error

    def running_restores(self: HasSession) -> list[Restore]:
        with self.session() as s:
            return list(s.scalars(select(Restore).where(Restore.status == RunStatus.RUNNING)))

    def restores(self: HasSession, limit: int = 50) -> list[Restore]:
        with self.session() as s:
            return list(s.scalars(select(Restore).order_by(Restore.id.desc()).limit(limit)))

    def last_drills(self: HasSession) -> dict[tuple[str, str], DrillVerdict]:
        """Each source's finished drill of its newest drilled restore point (what `status`,
        the report and the metrics show): a drill round restores the newest archive and an
        older one, in any order, so the drill started or finished last may be the older
        point's (found in a new-user trial: a failed newest point showed as PASS)."""
        done = (DrillStatus.PASS, DrillStatus.WARN, DrillStatus.FAIL)
        pairs = select(Drill.host, Drill.source).distinct().subquery()  # a covering index scan
        point = func.coalesce(Archive.created_at, Drill.started_at)  # the archive's own time
        newest = (
            select(Drill.id)
            .outerjoin(
                Archive,
                and_(Archive.repository == Drill.repository, Archive.name == Drill.archive),
            )
            .where(
                Drill.host == pairs.c.host, Drill.source == pairs.c.source, Drill.status.in_(done)
            )
            .order_by(point.desc(), Drill.id.desc())
            .limit(1)
            .correlate(pairs)
            .scalar_subquery()
        )
        ids = select(newest).select_from(pairs)
        # the verdict's columns, not Drill objects: a fleet's worth of ORM objects cost
        # more than the queries (bench/catalogue.py)
        columns = (
            Drill.host,
            Drill.source,
            Drill.archive,
            Drill.status,
            Drill.finished_at,
            Drill.rto_seconds,
            Drill.detail,
            Drill.checks,
        )
        cols = (*columns, Drill.id, Archive.run_id)
        with self.session() as s:
            wanted = [i for i in s.scalars(ids) if i is not None]
            anchors = [
                row
                for batch in batches(wanted)
                for row in s.execute(
                    select(*cols).outerjoin(Archive, _drilled).where(Drill.id.in_(batch))
                )
            ]
            # the restore point each anchor restored: the run that made its archives
            runs = sorted({r.run_id for r in anchors if r.run_id is not None})
            items = [  # every item of those points
                row
                for batch in batches(runs)
                for row in s.execute(
                    select(*cols)
                    .join(Archive, _drilled)
                    .where(Archive.run_id.in_(batch), Drill.status.in_(done))
                )
            ]
        return _per_point(anchors, items)

    # -- restore drills -------------------------------------------------------------------
    def start_drill(
        self: HasSession,
        host: str,
        source: str,
        repository: str,
        archive: str,
        trigger: str,
        scratch: str | None,
    ) -> int:
        with self.session() as s:
            row = Drill(
                host=host,
                source=source,
                repository=repository,
                archive=archive,
                trigger=trigger,
                status=DrillStatus.RUNNING,
                started_at=utcnow(),
                pid=os.getpid(),
                scratch=scratch,
                nbytes=0,
                checks=[],
            )
            s.add(row)
            s.flush()
            return row.id

    def finish_drill(
        self: HasSession,
        drill_id: int,
        status: DrillStatus,
        *,
        rto_seconds: float | None,
        nbytes: int = 0,
        checks: Sequence[Check] = (),
        detail: str | None = None,
    ) -> None:
        recorded = [c.as_json() for c in checks]
        with self.session() as s:
            row = s.get_one(Drill, drill_id)
            row.status, row.finished_at, row.rto_seconds = status, utcnow(), rto_seconds
            row.nbytes, row.checks, row.detail = nbytes, recorded, detail

    def running_drills(self: HasSession) -> list[Drill]:
        with self.session() as s:
            return list(s.scalars(select(Drill).where(Drill.status == DrillStatus.RUNNING)))

    def drills(self: HasSession, limit: int = 100) -> list[Drill]:
        with self.session() as s:
            return list(s.scalars(select(Drill).order_by(Drill.id.desc()).limit(limit)))
