"""status: per configured source, is it backed up, how big, when next; plus the queue.

A source is *stale* when its last success is older than twice its schedule's interval
(or it never succeeded): the one thing ops must see first.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from backupd.actions.context import Context
from backupd.borg.adapter import Borg
from backupd.catalogue.history import ItemPoint, Sizes
from backupd.catalogue.models import utcnow
from backupd.catalogue.restores import DrillVerdict
from backupd.config.cron import cron_trigger, interval
from backupd.config.units import utc_iso


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


def offsite_rows(ctx: Context) -> list[dict[str, Any]]:
    """Per configured host, its off-site copy (empty without ``[offsite]``): when it was
    last copied to every remote, when its copies last restored in a drill, how the newest
    copy run and the newest drill of the copy ended."""
    if ctx.config.offsite is None:
        return []
    cat = ctx.catalogue
    copied = cat.last_good_maintenance("offsite")
    verified = cat.last_good_maintenance("offsite_drill")
    last, drills = cat.last_maintenance("offsite"), cat.last_maintenance("offsite_drill")
    rows = []
    for host in sorted(ctx.config.hosts):
        newest, drill = last.get(host), drills.get(host)
        rows.append(
            {
                "host": host,
                "last_copied": _iso(copied.get(host)),
                "copy_verified": _iso(verified.get(host)),
                "last_status": newest.status if newest else None,
                "last_error": newest.error if newest else None,
                "drill_status": drill.status if drill else None,
                "drill_error": drill.error if drill else None,
            }
        )
    return rows


def status_rows(
    ctx: Context, items: dict[tuple[str, str], list[ItemPoint]] | None = None
) -> list[dict[str, Any]]:
    """One row per configured source. ``items``: ``newest_per_item()`` when the caller
    has read it already (the metrics need its sizes too)."""
    cat = ctx.catalogue
    recorded = {(s.host, s.source): s for s in cat.status()}
    queued = {(q.host, q.source): q.state for q in cat.queued_jobs() if q.source}
    drills = cat.last_drills()
    items = cat.newest_per_item() if items is None else items
    now = utcnow()
    timing = _Timing(now)
    rows = []
    for source in ctx.config.all_sources():
        key = (source.host, source.name)
        st = recorded.get(key)
        size = Sizes.of(items.get(key, []))
        schedule = ctx.config.schedule_for(source)
        every, next_run = timing(schedule)
        last_success = st.last_success if st else None
        age = (now - last_success).total_seconds() if last_success else None
        stale_after = ctx.config.alerts.stale_factor * every.total_seconds()
        rows.append(
            {
                "host": source.host,
                "source": source.name,
                "kind": source.kind,
                "last_success": _iso(last_success),
                "age_seconds": round(age) if age is not None else None,
                "stale": age is None or age > stale_after,
                "last_status": st.last_status if st else None,
                "last_run": _iso(st.last_run if st else None),
                "last_error": st.last_error if st else None,
                "last_failure": _iso(st.last_failure if st else None),
                "last_failure_error": st.last_failure_error if st else None,
                "last_drill": _drill(drills.get(key)),
                "archives": size.archives,
                "original_bytes": size.original,
                "stored_bytes": size.deduplicated,
                "dedup_ratio": round(size.original / size.deduplicated, 2)
                if size.deduplicated
                else None,
                "next_run": _iso(next_run),
                "daemon": queued.get(key),  # queued, running or None
                "items": [
                    {
                        "item": i.item,
                        "last_archive": i.archive,
                        "last_archive_at": _iso(i.created_at),
                        "age_seconds": round((now - i.created_at).total_seconds()),
                        "archives": i.archives,
                    }
                    for i in items.get(key, [])
                ],
            }
        )
    return rows


class _Timing:
    """A schedule's interval and next firing, worked out once per schedule: a fleet's
    sources share a few schedules, and a cron trigger costs ~0.1 ms to build."""

    def __init__(self, now: datetime) -> None:
        self._now = now
        self._known: dict[str, tuple[timedelta, datetime | None]] = {}

    def __call__(self, schedule: str) -> tuple[timedelta, datetime | None]:
        if schedule not in self._known:
            next_run = cron_trigger(schedule).get_next_fire_time(None, self._now)
            self._known[schedule] = (interval(schedule, self._now), next_run)
        return self._known[schedule]


def key_exports_missing(ctx: Context) -> list[dict[str, str]]:
    """Existing repositories whose key was never exported (`backupctl key export`): lose
    the store's copy of the key and every archive in them is lost."""
    repos = {h: ctx.repository(h) for h in sorted(ctx.config.hosts)}
    # Borg.is_repository, not ctx.borg's: status must work where no borg binary is found
    present = [(h, str(r)) for h, r in repos.items() if Borg.is_repository(r)]
    missing = ctx.catalogue.never_exported(present)
    return [{"host": h, "repository": str(repos[h])} for h in missing]


def repositories_lost(ctx: Context) -> list[tuple[str, str, int]]:
    """(host, repository, live archives the catalogue lists) for each repository that is
    gone from the store though the catalogue lists archives in it: the store (or that
    part of it) lost; the restore runbook, "The store is lost"."""
    lost = []
    for host in sorted(ctx.config.hosts):
        repo = ctx.repository(host)
        if not Borg.is_repository(repo):
            listed = len(ctx.catalogue.live_archives(str(repo)))
            if listed:
                lost.append((host, str(repo), listed))
    return lost


def _drill(d: DrillVerdict | None) -> dict[str, Any] | None:
    """The newest restore drill's verdict: the proof that the source restores."""
    if d is None:
        return None
    return {
        "verdict": d.status,
        "at": _iso(d.finished_at),
        "archive": d.archive,
        "rto_seconds": d.rto_seconds,
        "detail": d.detail,
    }


def _iso(when: datetime | None) -> str | None:
    return utc_iso(when) if when else None
