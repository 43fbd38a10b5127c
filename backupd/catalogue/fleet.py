"""The fleet at a glance (``status``, the report, alerts): every source's newest run,
success and failure in a handful of queries, whatever the number of sources and the
length of their history. Each per-source question is an index seek (``ix_runs_*``,
migration 0004), asked for all sources in one statement."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from backupd.catalogue.jobs import GOOD, HasSession, batches
from backupd.catalogue.models import Host, Run, RunStatus, Source


@dataclass(frozen=True)
class SourceStatus:
    host: str
    source: str
    kind: str
    last_success: datetime | None
    last_status: str | None
    last_error: str | None
    last_run: datetime | None
    last_failure: datetime | None = None
    last_failure_error: str | None = None


def _newest_run(*where: Any) -> Any:
    """The id of a source's newest run meeting ``where`` (correlated with sources)."""
    return (
        select(Run.id)
        .where(Run.source_id == Source.id, *where)
        .order_by(Run.started_at.desc(), Run.id.desc())
        .limit(1)
        .correlate(Source)
        .scalar_subquery()
    )


def _last_finished(status: RunStatus) -> Any:
    # one status per subquery: max() over an equality prefix of the index is one seek
    return (
        select(func.max(Run.finished_at))
        .where(Run.source_id == Source.id, Run.status == status)
        .correlate(Source)
        .scalar_subquery()
    )


class FleetQueries:
    def run_statuses_since(self: HasSession, since: datetime, trigger: str) -> list[bool]:
        """Whether each run of ``trigger`` started at or after ``since`` succeeded (a
        warning is a success): how a ``backupd --once`` went."""
        query = select(Run.status).where(Run.started_at >= since, Run.trigger == trigger)
        with self.session() as s:
            return [status in GOOD for status in s.scalars(query)]

    def status(self: HasSession) -> list[SourceStatus]:
        """Every recorded source, by host and name: its newest run (status, error), newest
        success (a warning is a success) and newest failure."""
        per_source = (
            select(
                Host.name,
                Source.name,
                Source.kind,
                _newest_run(),
                _last_finished(RunStatus.SUCCEEDED),
                _last_finished(RunStatus.WARNING),
                _newest_run(Run.status == RunStatus.FAILED),
            )
            .join(Host, Source.host_id == Host.id)
            .order_by(Host.name, Source.name)
        )
        with self.session() as s:
            sources = s.execute(per_source).all()
            wanted = [i for row in sources for i in (row[3], row[6]) if i is not None]
            runs = {
                r.id: r
                for batch in batches(wanted)
                for r in s.execute(
                    select(Run.id, Run.status, Run.error, Run.started_at).where(Run.id.in_(batch))
                )
            }
        rows = []
        for host, name, kind, newest, ok, warned, failed in sources:
            last, fail = runs.get(newest), runs.get(failed)
            successes = [t for t in (ok, warned) if t is not None]
            rows.append(
                SourceStatus(
                    host=host,
                    source=name,
                    kind=kind,
                    last_success=max(successes) if successes else None,
                    last_status=last.status if last else None,
                    last_error=last.error if last else None,
                    last_run=last.started_at if last else None,
                    last_failure=fail.started_at if fail else None,
                    last_failure_error=fail.error if fail else None,
                )
            )
        return rows
