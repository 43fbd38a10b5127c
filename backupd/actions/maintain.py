"""maintain: run one maintenance job (prune, compact, check, catalogue, drill, report,
the off-site copy and its drill).

The store jobs live in ``jobs/`` (found by ``maintenance_registry``); the scheduled verbs
(drill, report, offsite_drill) are actions and join them here, so nothing below imports a verb.

Same discipline as a backup: the maintenance run row is written first, completed after
(succeeded / warning / failed, with a one-line reason), failures and warnings become
alerts, and an unexpected exception still completes the row before it propagates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from backupd.actions.context import Context
from backupd.actions.drill_job import JOB as DRILL
from backupd.actions.offsite_drill import JOB as OFFSITE_DRILL
from backupd.actions.recorded import Ending, settle
from backupd.actions.report import JOB as REPORT
from backupd.catalogue import RunStatus
from backupd.errors import UsageError
from jobs.base import MaintenanceEnv, MaintenanceJob, MaintenanceResult, scheduled_under
from jobs.registry import maintenance_registry

log = logging.getLogger(__name__)


def maintenance_jobs() -> dict[str, MaintenanceJob]:
    """Every job the daemon schedules, by name: the store jobs and the scheduled verbs."""
    verbs = (DRILL, REPORT, OFFSITE_DRILL)
    return {**maintenance_registry(), **{job.name: job for job in verbs}}


@dataclass(frozen=True)
class MaintenanceOutcome:
    job: str
    host: str | None
    run_id: int
    status: RunStatus
    summary: str | None = None
    error: str | None = None
    transient: bool = False  # trying again later may help (the daemon retries)

    @property
    def ok(self) -> bool:
        return self.status in (RunStatus.SUCCEEDED, RunStatus.WARNING)


def jobs_for(ctx: Context) -> list[tuple[str, str | None]]:
    """Every (job, host) the daemon schedules: per-repository jobs once per configured host,
    store-wide jobs once (host None)."""
    planned: list[tuple[str, str | None]] = []
    for name, job in sorted(maintenance_jobs().items()):
        if not scheduled_under(job, ctx.config):
            continue
        if job.per_repository:
            planned += [(name, host) for host in sorted(ctx.config.hosts)]
        else:
            planned.append((name, None))
    return planned


def schedule_of(job: str) -> str:
    """The ``[maintenance]`` key whose crontab line runs ``job``: its own name, or the one
    it shares (the catalogue's off-site copy runs with the hosts', ``offsite``)."""
    return str(getattr(maintenance_jobs()[job], "schedule", job))


def lookup_job(ctx: Context, job: str, host: str | None) -> MaintenanceJob:
    """The job, checked against what it runs on; before any row is written."""
    found = maintenance_jobs().get(job)
    if found is None:
        known = ", ".join(sorted(maintenance_jobs())) or "none"
        raise UsageError(f"unknown maintenance job {job!r} (known: {known})")
    if found.per_repository and host not in ctx.config.hosts:
        known = ", ".join(sorted(ctx.config.hosts)) or "none"
        raise UsageError(f"{job} runs on one host's repository: name a host ({known})")
    if not found.per_repository and host is not None:
        raise UsageError(f"{job} runs once for the whole store: name no host")
    return found


def run_maintenance(
    ctx: Context,
    job: str,
    host: str | None,
    trigger: str,
    accepted: frozenset[str] = frozenset(),
) -> MaintenanceOutcome:
    """Run ``job`` (on ``host``'s repository, or the store's); ``accepted``: what the
    operator accepted for this run (``backupctl offsite run --accept-shrink``)."""
    found = lookup_job(ctx, job, host)
    cat = ctx.catalogue
    run_id = cat.start_maintenance(job, host, trigger)
    label = f"{host or 'store'}: {job}"
    log.info("%s: started (maintenance run %d)", label, run_id)

    def finish(end: Ending) -> None:
        cat.finish_maintenance(run_id, end.run_status, error=end.error, stderr_tail=end.stderr_tail)

    with settle(label, finish) as ending, ctx.borg.job(f"the {job} job of {host or 'the store'}"):
        result = _run(ctx, found, host, trigger, accepted)
    if ending.how == "stopped":  # a shutdown, not a fault: no alert
        log.warning("%s", ending.error)
        return MaintenanceOutcome(
            job, host, run_id, RunStatus.INTERRUPTED, error=ending.error, transient=ending.transient
        )
    if not ending.ok:
        assert ending.error is not None
        cat.record_alert(f"{job}_failed", ending.error, host=host)
        log.error("%s", ending.error)
        return MaintenanceOutcome(
            job, host, run_id, RunStatus.FAILED, error=ending.error, transient=ending.transient
        )
    if result.warnings:
        message = f"{label}: " + "; ".join(result.warnings)
        cat.finish_maintenance(run_id, RunStatus.WARNING, summary=result.summary, error=message)
        cat.record_alert(f"{job}_warning", message, host=host)
        log.warning("%s: %s; %s", label, result.summary, "; ".join(result.warnings))
        return MaintenanceOutcome(job, host, run_id, RunStatus.WARNING, result.summary, message)
    cat.finish_maintenance(run_id, RunStatus.SUCCEEDED, summary=result.summary)
    log.info("%s: %s", label, result.summary)
    return MaintenanceOutcome(job, host, run_id, RunStatus.SUCCEEDED, result.summary)


def _run(
    ctx: Context, job: MaintenanceJob, host: str | None, trigger: str, accepted: frozenset[str]
) -> MaintenanceResult:
    repository = None
    if host is not None:
        repository = ctx.repository(host)
        missing = not ctx.borg.is_repository(repository)
        if missing and not getattr(job, "runs_without_repository", False):
            # no backup yet: nothing to look after
            return MaintenanceResult(f"no repository yet at {repository}: nothing to do")
    env = MaintenanceEnv(ctx.config, ctx.borg, ctx.catalogue, host, repository, trigger, accepted)
    return job.run(env)
