"""status: per configured source, the last success and the last outcome."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from backupd.actions.context import Context


def queue_rows(ctx: Context) -> list[dict[str, Any]]:
    """What the daemon has queued or running now (empty when it is not running)."""
    return [
        {
            "job": q.job,
            "target": "/".join(p for p in (q.host, q.source) if p) or "store",
            "state": q.state,
            "trigger": q.trigger,
            "attempt": q.attempt,
            "since": _iso(q.started_at if q.state == "running" else q.not_before),
            "pid": q.pid,
        }
        for q in ctx.catalogue.queued_jobs()
    ]


def status_rows(ctx: Context) -> list[dict[str, Any]]:
    recorded = {(s.host, s.source): s for s in ctx.catalogue.status()}
    queued = {(q.host, q.source): q.state for q in ctx.catalogue.queued_jobs() if q.source}
    rows = []
    for source in ctx.config.all_sources():
        st = recorded.get((source.host, source.name))
        rows.append(
            {
                "host": source.host,
                "source": source.name,
                "kind": source.kind,
                "last_success": _iso(st.last_success if st else None),
                "last_status": st.last_status if st else None,
                "last_run": _iso(st.last_run if st else None),
                "last_error": st.last_error if st else None,
                "daemon": queued.get((source.host, source.name)),  # queued, running or None
            }
        )
    return rows


def _iso(when: datetime | None) -> str | None:
    return when.isoformat(timespec="seconds") if when else None
