"""report: build the weekly report, record it in the catalogue, and mail every queued one.

A report is recorded before it is sent, so an SMTP outage loses nothing: the job fails
with a transient error (the daemon retries it, backing off), and whatever is still queued
goes out with the next run or ``backupctl report --retry``. A retry does not build a
second report for the same week. Without a ``[mail]`` table the report is recorded as
``unsent`` and the summary says so.
"""

from __future__ import annotations

from datetime import datetime

from backupd.actions.context import Context
from backupd.catalogue.models import Report, utcnow
from backupd.catalogue.reports import QUEUED
from backupd.cron import interval
from backupd.errors import MailError
from backupd.mail import deliver_queued, queue_new_report
from backupd.report import HEADLINES
from jobs.base import MaintenanceEnv, MaintenanceResult


def is_retry(newest: Report | None, schedule: str, now: datetime) -> bool:
    """A queued report younger than half the schedule's interval is this firing's own,
    left by a failed delivery: the daemon is retrying the job, not asking for a new one."""
    if newest is None or newest.status != QUEUED:
        return False
    return now - newest.created_at < interval(schedule, now) / 2


class ReportJob:
    name = "report"
    per_repository = False

    def run(self, env: MaintenanceEnv) -> MaintenanceResult:
        ctx = Context.sharing(env.config, env.catalogue, env.borg)  # one catalogue a process
        now = utcnow()
        newest = ctx.catalogue.newest_report()
        if is_retry(newest, env.config.maintenance.report, now):
            assert newest is not None
            made = f"report {newest.id} ({HEADLINES[newest.verdict]}) built earlier"
        else:
            report_id, data = queue_new_report(ctx, now)
            made = f"report {report_id} ({data.headline})"
        if env.config.mail is None:
            return MaintenanceResult(f"{made} recorded, not mailed: no [mail] table in the "
                                     "configuration")  # fmt: skip
        delivery = deliver_queued(ctx, force=True)  # weekly (and retries): try every one
        if delivery.failed:
            ids = ", ".join(str(i) for i, _ in delivery.failed)
            raise MailError(f"{made}; report(s) {ids} queued, not delivered: "
                            f"{delivery.failed[-1][1]}")  # fmt: skip
        return MaintenanceResult(f"{made}; mail: {delivery.summary()}")


JOB = ReportJob()
