"""report: the weekly report gathered from the catalogue, recorded, and mailed (the
catalogue-backed queue that never loses a report; SMTP itself: backupd/notify/mail.py).

A report is written to the catalogue (``reports``, status ``queued``) *before* the first
attempt to send it, so a crash or an SMTP outage leaves it there; every attempt either
marks it ``sent`` or records the error and when to try again. Without a ``[mail]`` table
the report is still recorded, as ``unsent``: there is nobody to send it to, and mailing a
backlog the day mail is configured would bury the current report under old ones.

Several processes deliver the queue (the daemon's alert loop, the report job, ``backupctl
report --retry``): each *claims* a report (catalogue/claims.py) before any mail leaves, and
only the winner sends it. Delivery is at least once, not exactly once: a sender that dies
after the server accepted the message but before it marked the report sent leaves a claim
that expires after ``claim_lease``; then another sender mails the report again (once).

The SMTP password comes from a credential source (file, systemd credential or command,
like the Borg passphrase), read at each attempt; it never reaches the log, argv or the
catalogue.

The report job (``JOB``, scheduled by ``[maintenance] report``) builds the report of the
period since the previous one and delivers every queued one; the rendering is
backupd/render/report.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_string, policy
from email.message import EmailMessage

from backupd.actions.context import Context
from backupd.actions.report_jobs import maintenance_lines, offsite_copies, offsite_problems
from backupd.actions.status import status_rows
from backupd.borg.space import StoreDisk
from backupd.catalogue.changes import FlagView
from backupd.catalogue.claims import claim_token
from backupd.catalogue.models import Report, utcnow
from backupd.catalogue.reports import QUEUED, UNSENT, ArchivePoint
from backupd.config.cron import interval
from backupd.config.load import MailConfig
from backupd.config.units import human_age
from backupd.errors import MailError
from backupd.notify.mail import claim_lease, send_message
from backupd.render.report import (
    DEFAULT_PERIOD,
    GROWTH_DAYS,
    HEADLINES,
    ORDER,
    RTO_WINDOW,
    ReportData,
    SourceLine,
    build_message,
)
from jobs.base import MaintenanceEnv, MaintenanceResult
from jobs.compact import tree_bytes

log = logging.getLogger(__name__)
NO_MAIL_RETRY = 86400.0  # queued, but [mail] is gone: say so once a day


# -- gathering ---------------------------------------------------------------------------
def default_period(ctx: Context, now: datetime) -> tuple[datetime, datetime]:
    """Since the previous report (whatever became of it), else the last seven days."""
    last = ctx.catalogue.newest_report()
    start = last.period_end if last is not None else now - DEFAULT_PERIOD
    return min(start, now), now


def gather(ctx: Context, now: datetime | None = None, start: datetime | None = None) -> ReportData:
    end = now or utcnow()
    start = start or default_period(ctx, end)[0]
    cat = ctx.catalogue
    points = cat.archive_points()
    drills = cat.last_drills()
    failures = cat.failures_between(start, end)
    period_drills = cat.drills_between(start, end)
    flags = [v for v in cat.change_flags() if v.flag.acked_at is None or v.flag.created_at >= start]
    sources = []
    for row in status_rows(ctx):
        key = (row["host"], row["source"])
        changes = [v for v in flags if (v.host, v.source) == key]
        mine = [a for a in points if (a.host, a.source) == key]
        last = drills.get(key)
        failed = [
            f"{f.at:%a %d %H:%M}Z backup {f.status}: {_unprefixed(f.error, key)}"
            for f in failures
            if (f.host, f.source) == key
        ]
        failed_drills = [
            f"{d.finished_at:%a %d %H:%M}Z drill FAIL: {_drill_reason(d.detail, d.checks, key)}"
            for d in period_drills
            if (d.host, d.source) == key and d.status == "fail"
        ]
        kinds = [k for k, some in (("backup", failed), ("drill", failed_drills)) if some]
        failed += failed_drills
        verdict = last.status if last else None
        reason = _drill_reason(last.detail, last.checks, key) if last else ""
        problems = _problems(row, verdict, reason, kinds)
        problems += [("fail", _change_line(v)) for v in changes if v.flag.acked_at is None]
        failed += [
            f"{v.flag.created_at:%a %d %H:%M}Z {_change_line(v)}"
            for v in changes
            if v.flag.acked_at is not None
        ]
        sources.append(
            SourceLine(
                row["host"],
                row["source"],
                row["kind"],
                max((lvl for lvl, _ in problems), key=ORDER.__getitem__, default="ok"),
                row["age_seconds"],
                row["stale"],
                row["stored_bytes"],
                _stored_at(mine, end) - _stored_at(mine, start),
                row["dedup_ratio"],
                verdict,
                last.rto_seconds if last else None,
                tuple(failed),
                tuple(problems),
            )
        )
    maintenance, history = maintenance_lines(ctx, start, end)
    copies = offsite_copies(ctx)
    maintenance += offsite_problems(ctx, copies, end)
    return ReportData(
        start,
        end,
        sources,
        maintenance,
        str(ctx.config.store.path),
        _disk(ctx),
        _repositories(ctx),
        _growth(points, end),
        _rto_series(ctx, end),
        copies,
        history,
    )


def _problems(
    row: dict[str, object], drill: str | None, reason: str, failed_in_period: list[str]
) -> list[tuple[str, str]]:
    """What puts a source in the verdict; ``failed_in_period``: which of its backups and
    drills failed in the period (said when it has recovered since)."""
    found = []
    if row["stale"]:
        age, items = row["age_seconds"], row["items"]
        if isinstance(age, int | float):
            since = f"last complete backup {human_age(age)} ago"
        elif isinstance(items, list) and items:  # never "never" while good archives exist
            newest = ", ".join(f"{i['item']} {human_age(i['age_seconds'])} ago" for i in items)
            since = f"no complete backup yet; newest per item: {newest}"
        else:
            since = "never backed up"
        found.append(("fail", f"STALE: {since}"))
    if row["last_status"] == "failed":
        key = (str(row["host"]), str(row["source"]))
        found.append(("fail", f"last backup failed: {_unprefixed(row['last_error'], key)}"))
    if drill == "fail":
        found.append(("fail", f"last restore drill FAILED: {reason}"))
    elif drill == "warn":
        found.append(("warn", f"last restore drill warned: {reason}"))
    elif drill is None:
        found.append(("warn", "never drilled: nobody knows whether it restores"))
    if failed_in_period and not any(lvl == "fail" for lvl, _ in found):
        what = " and ".join(failed_in_period)
        found.append(("warn", f"a {what} failed during the period (recovered since)"))
    return found


def _change_line(view: FlagView) -> str:
    """A change alert as the report says it (decision 0024)."""
    flag = view.flag
    note = f": {flag.ack_note}" if flag.ack_note else ""
    state = (
        f"acknowledged by {flag.acked_by}{note}"
        if flag.acked_at is not None
        else f"{view.held.name} kept until `backupctl alerts ack {flag.id}`"
    )
    return f"change alert {flag.id}: {flag.item} looks like loss: {view.what} ({state})"


def _unprefixed(error: object, key: tuple[str, str]) -> str:
    """A run's error without its "host/source: " lead: the report's row names the source."""
    text = str(error or "no reason recorded")
    return text.removeprefix(f"{key[0]}/{key[1]}: ")


def _drill_reason(
    detail: str | None, checks: Sequence[dict[str, object]], key: tuple[str, str]
) -> str:
    """Why a drill failed or warned: its failed checks, else its detail (without the
    "host/source: " the report's line already begins with)."""
    bad = [f"{c.get('check')}: {c.get('detail')}" for c in checks if not c.get("ok")]
    return "; ".join(bad) or (_unprefixed(detail, key) if detail else "no reason recorded")


def _stored_at(points: Sequence[ArchivePoint], when: datetime) -> int:
    """Bytes the archives alive at ``when`` had added to their repository."""
    return sum(
        a.deduplicated
        for a in points
        if a.created_at <= when and (a.pruned_at is None or a.pruned_at > when)
    )


def _growth(points: Sequence[ArchivePoint], end: datetime) -> list[float]:
    if not points:
        return []
    days = [end - timedelta(days=GROWTH_DAYS - 1 - i) for i in range(GROWTH_DAYS)]
    return [float(_stored_at(points, day)) for day in days]


def _rto_series(ctx: Context, end: datetime) -> list[tuple[str, list[tuple[float, float]]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for d in ctx.catalogue.drills_between(end - RTO_WINDOW, end):
        if d.rto_seconds is not None and d.finished_at is not None:
            series.setdefault(f"{d.host}/{d.source}", []).append(
                (d.finished_at.timestamp(), d.rto_seconds)
            )
    return sorted(series.items())


def _disk(ctx: Context) -> tuple[int, int, int] | None:
    try:
        disk = StoreDisk.of(ctx.config.store.path)
    except OSError:  # no store yet (nothing backed up): nothing to say
        return None
    return disk.size, disk.used, disk.free


def _repositories(ctx: Context) -> list[tuple[str, int]]:
    found = []
    for host in sorted(ctx.config.hosts):
        repo = ctx.repository(host)
        if repo.is_dir():
            found.append((host, tree_bytes(repo)))
    return found


# -- the queue --------------------------------------------------------------------------
def queue_report(
    ctx: Context,
    msg: EmailMessage,
    *,
    period_start: datetime,
    period_end: datetime,
    verdict: str,
) -> int:
    """Record the report before any attempt to send it: ``queued`` with mail configured,
    ``unsent`` without (kept in the catalogue, never delivered)."""
    mail = ctx.config.mail
    return ctx.catalogue.add_report(
        period_start=period_start,
        period_end=period_end,
        verdict=verdict,
        subject=str(msg["Subject"]),
        recipients=list(mail.to) if mail else [],
        message=msg.as_string(),
        status=QUEUED if mail else UNSENT,
    )


@dataclass
class Delivery:
    sent: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)  # (report id, error)
    waiting: list[int] = field(default_factory=list)  # queued, next attempt not due yet
    elsewhere: list[int] = field(default_factory=list)  # claimed by another sender

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        parts = [f"{len(self.sent)} sent"] if self.sent else []
        parts += [f"{len(self.failed)} failed"] if self.failed else []
        parts += [f"{len(self.waiting)} waiting"] if self.waiting else []
        parts += [f"{len(self.elsewhere)} taken by another sender"] if self.elsewhere else []
        return ", ".join(parts) or "none queued"


def deliver_queued(ctx: Context, *, force: bool = False, now: datetime | None = None) -> Delivery:
    """Send every queued report whose next attempt is due (every one with ``force``), each
    only if this sender wins its claim (one held by another sender is left to it). A
    failure is recorded on its row (attempts, last_error, next_attempt_at = now + ``[mail]
    retry``, doubling per attempt) and the claim released; the report stays queued."""
    now = now or utcnow()
    cat, mail = ctx.catalogue, ctx.config.mail
    done = Delivery()
    due_at = None if force else now
    due = cat.queued_reports(due_at)
    done.waiting = [r.id for r in cat.queued_reports() if r.id not in {d.id for d in due}]
    if mail is None:  # nothing is sent, so nothing to claim: note why on unclaimed rows
        error = "no [mail] table in the configuration"
        for row in due:
            cat.report_failed(row.id, None, error, NO_MAIL_RETRY)
            done.failed.append((row.id, error))
        return done
    token, lease = claim_token(), claim_lease(mail)
    for row in due:
        claimed = cat.claim_report(row.id, token, lease, due_at)
        if claimed is None:
            log.info("report %d: taken by another sender (or sent meanwhile)", row.id)
            done.elsewhere.append(row.id)
            continue
        _deliver_claimed(ctx, mail, claimed, token, done)
    return done


def _deliver_claimed(
    ctx: Context, mail: MailConfig, row: Report, token: str, done: Delivery
) -> None:
    parsed = message_from_string(row.message, policy=policy.default)
    assert isinstance(parsed, EmailMessage)  # policy.default builds EmailMessage
    try:
        send_message(mail, parsed, list(row.recipients))
    except MailError as e:
        later = ctx.catalogue.report_failed(row.id, token, str(e), mail.retry)
        if later is not None:
            log.info(
                "report %d: not delivered (attempt %d, next at %s): %s",
                row.id,
                later.attempts,
                later.next_attempt_at,
                e,
            )
        done.failed.append((row.id, str(e)))
        return
    if not ctx.catalogue.report_sent(row.id, token):
        log.warning(
            "report %d: sent, but its claim had expired and another sender took it: "
            "it may have been mailed twice (claim lease %s)",
            row.id,
            claim_lease(mail),
        )
    log.info("report %d: sent to %s", row.id, ", ".join(row.recipients))
    done.sent.append(row.id)


def report_message(ctx: Context, data: ReportData) -> EmailMessage:
    """The report as a mail from and to the configured addresses."""
    mail = ctx.config.mail
    sender = mail.sender if mail else "backupd@localhost"
    return build_message(data, sender, list(mail.to) if mail else [])


def queue_new_report(ctx: Context, now: datetime | None = None) -> tuple[int, ReportData]:
    """Build the report of the period since the previous one and record it (queued, or
    unsent without [mail]); nothing is sent yet."""
    data = gather(ctx, now)
    msg = report_message(ctx, data)
    report_id = queue_report(
        ctx, msg, period_start=data.start, period_end=data.end, verdict=data.verdict
    )
    return report_id, data


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
            return MaintenanceResult(
                f"{made} recorded, not mailed: no [mail] table in the configuration"
            )
        delivery = deliver_queued(ctx, force=True)  # weekly (and retries): try every one
        if delivery.failed:
            ids = ", ".join(str(i) for i, _ in delivery.failed)
            raise MailError(
                f"{made}; report(s) {ids} queued, not delivered: {delivery.failed[-1][1]}"
            )
        return MaintenanceResult(f"{made}; mail: {delivery.summary()}")


JOB = ReportJob()
