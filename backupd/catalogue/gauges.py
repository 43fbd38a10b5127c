"""What the Prometheus metrics add to ``status`` (issue 17): per source, the runs so far
by outcome, how long the newest finished run took, when a drill last proved it restores;
the alerts not yet delivered. One statement each, whatever the number of sources."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, func, select

from backupd.catalogue.jobs import HasSession
from backupd.catalogue.models import Drill, DrillStatus, Host, Run, RunStatus, Source

Key = tuple[str, str]  # (host, source)


class GaugeQueries:
    """Mixed into Catalogue."""

    def run_counts(self: HasSession) -> dict[Key, tuple[int, int]]:
        """(host, source) -> (finished runs, failed runs) since the catalogue began."""
        failed = func.sum(case((Run.status == RunStatus.FAILED, 1), else_=0))
        query = (
            select(Host.name, Source.name, func.count(Run.id), failed)
            .join(Source, Run.source_id == Source.id)
            .join(Host, Source.host_id == Host.id)
            .where(Run.status != RunStatus.RUNNING)
            .group_by(Host.name, Source.name)
        )
        with self.session() as s:
            return {(h, src): (n, int(bad or 0)) for h, src, n, bad in s.execute(query)}

    def last_run_seconds(self: HasSession) -> dict[Key, float]:
        """(host, source) -> seconds the newest finished run took."""
        newest = (
            select(Run.source_id, func.max(Run.id).label("id"))
            .where(Run.finished_at.is_not(None))
            .group_by(Run.source_id)
            .subquery()
        )
        query = (
            select(Host.name, Source.name, Run.started_at, Run.finished_at)
            .join(newest, Run.id == newest.c.id)
            .join(Source, Run.source_id == Source.id)
            .join(Host, Source.host_id == Host.id)
        )
        with self.session() as s:
            return {
                (h, src): (end - start).total_seconds()
                for h, src, start, end in s.execute(query)
                if end is not None
            }

    def last_verified(self: HasSession) -> dict[Key, datetime]:
        """(host, source) -> when its newest drill that restored it (pass or warn: the
        archive is marked verified either way) finished."""
        query = (
            select(Drill.host, Drill.source, func.max(Drill.finished_at))
            .where(Drill.status.in_((DrillStatus.PASS, DrillStatus.WARN)))
            .group_by(Drill.host, Drill.source)
        )
        with self.session() as s:
            return {(h, src): at for h, src, at in s.execute(query) if at is not None}
