"""backupctl report: preview, send and retry the weekly report; list the mail queue."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from backupd.actions.report import Delivery, deliver_queued, gather, queue_new_report
from backupd.cli.common import clean_errors, context, short_time, since_time, table
from backupd.errors import MailError, UsageError
from backupd.render.report import html_preview


@click.command()
@click.option(
    "--preview",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE.html",
    help="Write the report as HTML, charts inlined; nothing is sent.",
)
@click.option("--send", is_flag=True, help="Build the report, queue it and deliver it now.")
@click.option("--retry", is_flag=True, help="Deliver every queued report now.")
@click.option(
    "--since",
    metavar="DURATION",
    help="Preview: cover this long (e.g. 7d), not since the last report.",
)
@click.pass_obj
@clean_errors
def report(
    obj: dict[str, Any], preview: Path | None, send: bool, retry: bool, since: str | None
) -> None:
    """The weekly report: preview it, send it now, or deliver queued ones.

    The report covers the time since the previous report (else 7 days): an overall verdict
    first, then per source the last backup's age, stored size and growth, dedup ratio, last
    restore drill and its RTO, the failures of the period with their reasons, the store's
    disk use and two charts. Every report is recorded in the catalogue before it is sent; a
    failed delivery leaves it queued (exit 15) for the daemon or --retry. Without an option:
    the recent reports and their delivery state.

    \b
    Examples:
      backupctl report --preview /tmp/report.html && xdg-open /tmp/report.html
      backupctl report --send
      backupctl report --retry
      backupctl report
    """
    if sum(map(bool, (preview, send, retry))) > 1:
        raise UsageError("give one of --preview, --send, --retry")
    if since and not preview:
        raise UsageError(
            "--since goes with --preview (a sent report covers the time since the previous one)"
        )
    ctx = context(obj)
    if preview is not None:
        data = gather(ctx, start=since_time(since))
        _write(preview, html_preview(data))
        click.echo(f"{preview}: {data.headline}, {len(data.sources)} source(s)")
    elif send:
        if ctx.config.mail is None:
            raise UsageError(
                "no [mail] table in the configuration: nowhere to send the report "
                "(backupctl report --preview FILE.html shows it)"
            )
        report_id, data = queue_new_report(ctx)
        click.echo(f"report {report_id}: {data.headline}, queued")
        _deliver(deliver_queued(ctx, force=True))
    elif retry:
        _deliver(deliver_queued(ctx, force=True))
    else:
        _list(obj)


def _write(path: Path, text: str) -> None:
    """Written whole or not at all (a half-written preview would look like a short report)."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # fleet details: private
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(partial, path)


def _deliver(delivery: Delivery) -> None:
    for report_id in delivery.sent:
        click.echo(f"report {report_id}: sent")
    for report_id in delivery.elsewhere:
        click.echo(f"report {report_id}: taken by another sender")
    if not delivery.sent and not delivery.failed and not delivery.elsewhere:
        click.echo("no report queued")
    if delivery.failed:
        ids = ", ".join(str(i) for i, _ in delivery.failed)
        raise MailError(f"report(s) {ids} still queued: {delivery.failed[-1][1]}")


def _list(obj: dict[str, Any]) -> None:
    rows = context(obj).catalogue.reports(limit=20)
    table(
        ("REPORT", "CREATED", "VERDICT", "STATUS", "ATTEMPTS", "SENT", "LAST ERROR"),
        [
            (
                str(r.id),
                short_time(r.created_at),
                r.verdict,
                r.status,
                str(r.attempts),
                short_time(r.sent_at),
                (r.last_error or "")[:80],
            )
            for r in rows
        ],
    )
