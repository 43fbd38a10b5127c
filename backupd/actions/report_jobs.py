"""The weekly report's lines about maintenance jobs and off-site copies.

Two kinds of line, as for sources: how each job stands now (its newest run that ended on
its own), which counts in the verdict; and the failures, warnings and interruptions of
the period, with their time, which do not. A job that failed and has run well since is a
"recovered since" to check, not an action; an interrupted run (a stop, the end of the
off-site window) is history only; a job that failed before the period and has not run
well since is still a problem (a monthly drill of the copy is in more than one report).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from backupd.actions.context import Context
from backupd.actions.drill_job import JOB as DRILL
from backupd.actions.offsite_drill import JOB as OFFSITE_DRILL
from backupd.actions.status import offsite_rows
from backupd.catalogue import RunStatus
from backupd.catalogue.models import MaintenanceRun
from backupd.config.units import human_age
from jobs.base import MaintenanceJob, scheduled_under
from jobs.registry import maintenance_registry

OFFSITE_COPY_AGE = timedelta(days=2)  # copied daily: two days is a missed copy or two
OFFSITE_DRILL_AGE = timedelta(days=40)  # drilled monthly
OFFSITE_FIRST_DRILL = timedelta(days=35)  # the first monthly drill after the first copy
Line = tuple[str, str]  # (level: fail, warn; what, for a person)
Copies = list[tuple[str, datetime | None, datetime | None]]  # (host, copied, verified)


def maintenance_lines(
    ctx: Context, start: datetime, end: datetime
) -> tuple[list[Line], list[Line]]:
    """(problems: how the planned jobs stand at ``end``; history: the failed, warning and
    interrupted runs started in [start, end), oldest first, each with its time)."""
    period = ctx.catalogue.maintenance_problems(start, end)
    jobs = {**maintenance_registry(), DRILL.name: DRILL, OFFSITE_DRILL.name: OFFSITE_DRILL}
    problems: list[Line] = []
    for m in ctx.catalogue.maintenance_verdicts(end):
        if not _planned(ctx, jobs, m):
            continue  # a job no longer configured: its last word is history
        if m.status in (RunStatus.FAILED, RunStatus.WARNING):
            problems.append((_level(m), f"{_who(m)}: {m.job} {m.status}: {reason(m)}"))
        elif any(_same(b, m) and b.status != RunStatus.INTERRUPTED for b in period):
            recovered = f"{m.job} failed during the period (recovered since)"
            problems.append(("warn", f"{_who(m)}: {recovered}"))
    history = [
        (_level(m), f"{m.started_at:%a %d %H:%M}Z {_who(m)}: {m.job} {m.status}: {reason(m)}")
        for m in period
    ]
    return problems, history


def _planned(ctx: Context, jobs: Mapping[str, MaintenanceJob], m: MaintenanceRun) -> bool:
    """Whether the daemon still schedules ``m``'s job for its host (a host removed, a job
    whose table is gone: [offsite]), by the rule actions/maintain.py plans with; that module
    imports this one's caller, so ``jobs`` are all but the report's own."""
    if m.host is not None and m.host not in ctx.config.hosts:
        return False
    job = jobs.get(m.job)
    if job is None:
        return m.job == "report"  # the report's own job, always planned
    return scheduled_under(job, ctx.config)


def _level(m: MaintenanceRun) -> str:
    """fail, warn, or stop (an interrupted run: history only, in no verdict)."""
    if m.status == RunStatus.INTERRUPTED:
        return "stop"
    return "fail" if m.status == RunStatus.FAILED else "warn"


def _who(m: MaintenanceRun) -> str:
    return m.host or "store"


def reason(m: MaintenanceRun) -> str:
    """The run's reason without the "host: job: " the report's line already begins with."""
    text = m.error or m.summary or "no reason recorded"
    for said in (f"{_who(m)}: {m.job}: ", f"{_who(m)}: "):
        text = text.removeprefix(said)
    return text


def _same(a: MaintenanceRun, b: MaintenanceRun) -> bool:
    return (a.job, a.host) == (b.job, b.host)


def offsite_copies(ctx: Context) -> Copies:
    """Per host with [offsite]: when it was last copied, when a copy last proved to restore."""

    def at(iso: str | None) -> datetime | None:
        return datetime.fromisoformat(iso) if iso else None

    return [(c["host"], at(c["last_copied"]), at(c["copy_verified"])) for c in offsite_rows(ctx)]


def offsite_problems(ctx: Context, copies: Copies, end: datetime) -> list[Line]:
    """A copy over two days old (copied daily), a drill of it over 40 days old (monthly),
    or none in the 35 days since the first copy: to check, as the alert rules in
    monitoring/ say."""
    first = ctx.catalogue.last_good_maintenance("offsite", first=True) if copies else {}
    found = []
    for host, copied, verified in copies:
        if copied is None or end - copied > OFFSITE_COPY_AGE:
            since = f"for {human_age((end - copied).total_seconds())}" if copied else "ever"
            found.append(("warn", f"{host}: no good off-site copy {since}"))
        if verified is not None and end - verified > OFFSITE_DRILL_AGE:
            age = human_age((end - verified).total_seconds())
            found.append(("warn", f"{host}: its off-site copy not proved to restore for {age}"))
        since_first = first.get(host)
        if verified is None and since_first and end - since_first > OFFSITE_FIRST_DRILL:
            age = human_age((end - since_first).total_seconds())
            found.append(("warn", f"{host}: copied off site for {age}, never proved to restore"))
    return found
