"""The weekly report from a catalogue filled directly: verdict, rows, colours, the MIME
structure, the mail queue's bookkeeping, and the maintenance job without [mail]."""

from __future__ import annotations

import re
import socket
from datetime import datetime, timedelta
from email import message_from_string, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import text

from backupd.actions.context import Context
from backupd.actions.maintain import jobs_for, run_maintenance
from backupd.actions.report import (
    default_period,
    deliver_queued,
    gather,
    is_retry,
    queue_new_report,
    report_message,
)
from backupd.catalogue.models import RunStatus, Source, utcnow
from backupd.render.report import html_preview, render_html, render_text
from jobs.registry import load_config
from tests.harness.example_report import MiB, drill, run, source, write_config

FLEET = {"web1": {"maindb": "postgresql", "files": "directory"}, "web2": {"app": "sqlite"}}
ROWS_FAILED = {"check": "rows", "ok": False, "detail": "orders: 14999 rows, 15000 recorded"}
RED = 'class="fail" style="color:#b00020;font-weight:bold'


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when we return: refused


def make_ctx(tmp_path: Path, mail: bool = True) -> Context:
    extra = f'[mail]\nto = ["ops@example.org"]\nhost = "127.0.0.1"\nport = {closed_port()}\n'
    extra += 'security = "none"\nretry = "10m"\ntimeout = "5s"\n'
    return Context(load_config(write_config(tmp_path, FLEET, extra if mail else "")))


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    """maindb: good nightly, last drill failed; files: stale; app: a failure in the period,
    recovered, never drilled."""
    c = make_ctx(tmp_path)
    now = utcnow()
    with c.catalogue.session() as s:
        maindb = source(s, "web1", "maindb", "postgresql")
        for d in range(10, 0, -1):  # 10 MiB added each night, 100 MiB before the dedup
            at = now - timedelta(days=d, hours=12)
            run(s, maindb, at, dedup=10 * MiB, original=100 * MiB)
        drill(s, maindb, now - timedelta(days=20), "pass", 100.0)
        drill(s, maindb, now - timedelta(days=1), "fail", 130.0, [ROWS_FAILED])
        files = source(s, "web1", "files", "directory")
        run(s, files, now - timedelta(days=9), dedup=5 * MiB, original=5 * MiB)
        drill(s, files, now - timedelta(days=8), "pass", 60.0)
        app = source(s, "web2", "app", "sqlite")
        run(s, app, now - timedelta(days=2), "failed", "app.db: sqlite3 exited with status 1")
        run(s, app, now - timedelta(days=1), dedup=MiB, original=MiB)
    return c


def test_the_verdict_comes_first_and_failures_are_fail_in_the_text(ctx: Context) -> None:
    data = gather(ctx)
    assert data.verdict == "fail"
    text = render_text(data)
    first = text.splitlines()[0]
    assert first.startswith("ACTION NEEDED (2 problems, 2 to check)")  # every line counted
    lines = text.splitlines()
    problems = [line for line in lines if line.startswith("  FAIL ")]
    assert any("web1/maindb: last restore drill FAILED: rows: orders: 14999" in p for p in problems)
    assert any("web1/files: STALE: last complete backup 8d 23h ago" in p for p in problems)
    assert any("WARN  web2/app: never drilled" in line for line in lines)
    row = next(line for line in lines if line.startswith("FAIL") and "web1/maindb" in line)
    assert "FAIL" in row.split()[-2:]  # the drill column
    assert re.search(r"FAIL\s+web1/files\s+STALE 8d 23h", text)
    assert "app.db: sqlite3 exited with status 1" in text  # the failure of the period


def test_a_failed_drill_and_a_stale_source_are_red_in_the_html(ctx: Context) -> None:
    page = render_html(gather(ctx), lambda name: f"cid:{name}")
    assert f"{RED};padding:4px 6px;border-bottom:1px solid #e5e7eb;font-size:13px;" in page
    cells = re.findall(r'<td class="fail" style="[^"]*">([^<]*)</td>', page)
    assert "FAIL" in cells  # web1/maindb's last drill
    assert any(c.startswith("STALE 8d 23h") for c in cells)  # web1/files
    assert "web1/maindb" in cells and "web1/files" in cells
    assert "orders: 14999 rows, 15000 recorded" in page
    warn = re.findall(r'<td class="warn" style="[^"]*">([^<]*)</td>', page)
    assert "NEVER" in warn  # web2/app was never drilled
    assert page.index("ACTION NEEDED") < page.index("Sources")
    assert "background:#b00020" in page  # the banner


def test_rows_size_growth_dedup_and_rto(ctx: Context) -> None:
    rows = {s.name: s for s in gather(ctx).sources}
    maindb = rows["web1/maindb"]
    assert maindb.stored == 100 * MiB and maindb.growth == 60 * MiB  # six nights in the last 7 days
    assert maindb.dedup == 10.0 and maindb.drill == "fail" and maindb.rto == 130.0
    assert rows["web1/files"].growth == 0 and rows["web1/files"].stale
    assert rows["web2/app"].level == "warn" and rows["web2/app"].drill is None
    assert rows["web2/app"].failures and "sqlite3 exited" in rows["web2/app"].failures[0]


def all_good(c: Context, now: datetime) -> None:
    """Every source of FLEET backed up three hours ago and drilled since, passing."""
    with c.catalogue.session() as s:
        for host, sources in FLEET.items():
            for name, kind in sources.items():
                src = source(s, host, name, kind)
                run(s, src, now - timedelta(hours=3), dedup=MiB, original=2 * MiB)
                drill(s, src, now - timedelta(hours=2), "pass", 30.0)


def test_all_good_is_green(tmp_path: Path) -> None:
    c = make_ctx(tmp_path)
    now = utcnow()
    all_good(c, now)
    data = gather(c)
    assert (data.verdict, data.headline, data.problems) == ("ok", "ALL GOOD", [])
    assert 'class="fail"' not in render_html(data, str)
    assert render_text(data).startswith("ALL GOOD - backupd weekly report")


def test_the_message_is_text_and_html_with_the_charts_as_related_images(ctx: Context) -> None:
    msg = report_message(ctx, gather(ctx))
    parsed = message_from_string(msg.as_string(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["To"] == "ops@example.org" and parsed["Subject"].startswith("[backupd] ACTION")
    text, related = parsed.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html_part, *images = related.iter_parts()
    page = html_part.get_content()
    assert len(images) == 2
    for image in images:
        assert image.get_content_type() == "image/png"
        assert image.get_content().startswith(b"\x89PNG\r\n\x1a\n")
        assert f'src="cid:{image["Content-ID"].strip("<>")}"' in page


def test_the_preview_inlines_the_charts(ctx: Context) -> None:
    page = html_preview(gather(ctx))
    assert page.count('src="data:image/png;base64,iVBORw0KGgo') == 2 and "cid:" not in page


def test_a_failed_send_stays_queued_with_its_error_and_backs_off(ctx: Context) -> None:
    report_id, _data = queue_new_report(ctx)
    row = ctx.catalogue.report(report_id)
    assert (row.status, row.attempts, row.recipients) == ("queued", 0, ["ops@example.org"])
    first = deliver_queued(ctx)
    assert first.sent == [] and first.failed[0][0] == report_id
    error = first.failed[0][1]
    assert re.fullmatch(r"SMTP 127\.0\.0\.1:\d+ \(none\): connect failed: .*refused.*", error)
    row = ctx.catalogue.report(report_id)
    assert (row.status, row.attempts, row.last_error) == ("queued", 1, error)
    assert row.next_attempt_at is not None
    delay = (row.next_attempt_at - utcnow()).total_seconds()
    assert 590 < delay <= 600
    assert deliver_queued(ctx).waiting == [report_id]  # not due yet: left alone
    deliver_queued(ctx, force=True)
    row = ctx.catalogue.report(report_id)
    assert row.attempts == 2 and row.next_attempt_at is not None
    assert 1190 < (row.next_attempt_at - utcnow()).total_seconds() <= 1200  # doubled


def test_the_next_period_starts_where_the_last_report_ended(ctx: Context) -> None:
    now = utcnow()
    assert default_period(ctx, now) == (now - timedelta(days=7), now)
    report_id, data = queue_new_report(ctx, now - timedelta(hours=1))
    assert default_period(ctx, now)[0] == data.end
    assert is_retry(ctx.catalogue.report(report_id), "0 8 * * 1", now)
    assert not is_retry(ctx.catalogue.report(report_id), "0 8 * * 1", now + timedelta(days=4))


def test_without_mail_the_report_is_recorded_unsent_and_the_job_says_so(tmp_path: Path) -> None:
    c = make_ctx(tmp_path, mail=False)
    assert ("report", None) in jobs_for(c)  # the daemon schedules it like the others
    assert c.config.maintenance.report == "0 8 * * 1"
    outcome = run_maintenance(c, "report", None, "test")
    assert outcome.status == RunStatus.SUCCEEDED
    assert outcome.summary is not None and "not mailed: no [mail] table" in outcome.summary
    (row,) = c.catalogue.reports()
    assert (row.status, row.recipients, row.verdict) == ("unsent", [], "fail")
    assert deliver_queued(c, force=True).summary() == "none queued"


def test_the_job_fails_transiently_when_mail_is_down_and_keeps_the_report(ctx: Context) -> None:
    outcome = run_maintenance(ctx, "report", None, "test")
    assert outcome.status == RunStatus.FAILED and outcome.transient
    assert outcome.error is not None and "queued, not delivered: SMTP 127.0.0.1:" in outcome.error
    again = run_maintenance(ctx, "report", None, "retry")  # the daemon's retry
    assert again.error is not None and "built earlier" in again.error
    (row,) = ctx.catalogue.reports()  # one report, not two
    assert (row.status, row.attempts) == ("queued", 2)


def test_a_sub_second_restore_time_is_not_shown_as_zero() -> None:
    """Found in a new-user trial: a 0.8 s restore read "0 s", which looks broken."""
    from backupd.render.report import _seconds

    assert [_seconds(v) for v in (0.8, 9.96, 10.4, 314.0)] == ["0.8 s", "10.0 s", "10 s", "314 s"]


def test_the_headline_counts_every_line_and_the_subject_stays_on_one_line(ctx: Context) -> None:
    data = gather(ctx)
    assert data.headline == "ACTION NEEDED (2 problems, 2 to check)"
    raw = report_message(ctx, data).as_bytes()
    [subject] = [line for line in raw.split(b"\n") if line.startswith(b"Subject:")]
    assert subject.startswith(b"Subject: [backupd] ACTION NEEDED (2 problems, 2 to check), report")


def test_the_off_site_copies_are_in_the_report_and_old_ones_are_to_check(
    tmp_path: Path,
) -> None:
    """With [offsite]: a line per host (copied, last proved restorable); a copy over two
    days old or never made, and a drill of the copy over 40 days old, are to check. Without
    [offsite], no such section."""
    (tmp_path / "none").mkdir()
    without = gather(make_ctx(tmp_path / "none"))
    assert without.offsite == [] and "Off-site" not in render_text(without)

    (tmp_path / "eu.conf").write_text("type = s3\n")
    (tmp_path / "eu.conf").chmod(0o600)
    body = '[offsite.remotes.eu]\npath = "b/fleet"\nrclone = { file = "eu.conf" }\n'
    c = Context(load_config(write_config(tmp_path, FLEET, body)))
    now = utcnow()
    cat = c.catalogue
    for job, host, days in (
        ("offsite", "web1", 1),
        ("offsite_drill", "web1", 10),
        ("offsite", "web2", 3),
        ("offsite_drill", "web2", 41),
    ):
        run_id = cat.start_maintenance(job, host, "test")
        cat.finish_maintenance(run_id, RunStatus.SUCCEEDED, summary="eu: ...")
        with cat.session() as s:  # when it finished, in the past
            s.execute(
                text("UPDATE maintenance_runs SET finished_at = :at WHERE id = :id"),
                {"at": now - timedelta(days=days), "id": run_id},
            )
    data = gather(c, now=now)
    assert [h for h, _, _ in data.offsite] == ["web1", "web2"]
    report = render_text(data)
    assert "Off-site copies:\n  web1: copied " in report and "last proved restorable" in report
    checks = [why for lvl, why in data.problems if lvl == "warn" and "off-site" in why]
    assert checks == [
        "web2: no good off-site copy for 3d 0h",
        "web2: its off-site copy not proved to restore for 41d 0h",
    ], checks
    assert "Off-site copies" in render_html(data, str)


def maintenance_run(
    c: Context, job: str, host: str | None, days: float, status: RunStatus, error: str = ""
) -> None:
    """A maintenance run that started and ended ``days`` ago."""
    cat = c.catalogue
    run_id = cat.start_maintenance(job, host, "schedule")
    cat.finish_maintenance(run_id, status, summary="done", error=error or None)
    at = utcnow() - timedelta(days=days)
    with cat.session() as s:
        s.execute(
            text("UPDATE maintenance_runs SET started_at = :at, finished_at = :at WHERE id = :id"),
            {"at": at, "id": run_id},
        )


def test_a_maintenance_job_counts_as_it_stands_and_its_failures_are_history(
    tmp_path: Path,
) -> None:
    """Like a source: how each job stands now is in the verdict; the period's failed,
    warning and interrupted runs are history, with their time. A job failed and run well
    since is to check, not an action; an interrupted copy (the end of the off-site window)
    is no problem at all; a monthly job failed before the period and not run well since is
    still one; a host no longer configured is not."""
    (tmp_path / "eu.conf").write_text("type = s3\n")
    (tmp_path / "eu.conf").chmod(0o600)
    body = '[offsite.remotes.eu]\npath = "b/fleet"\nrclone = { file = "eu.conf" }\n'
    c = Context(load_config(write_config(tmp_path, FLEET, body)))
    now = utcnow()
    all_good(c, now)  # every source good: only the jobs speak
    for host in FLEET:  # copies made and drilled: no age warnings
        maintenance_run(c, "offsite", host, 0.5, RunStatus.SUCCEEDED)
        maintenance_run(c, "offsite_drill", host, 3, RunStatus.SUCCEEDED)
    maintenance_run(c, "offsite", "web1", 0.2, RunStatus.INTERRUPTED, "stopped at the window's end")
    maintenance_run(c, "check", "web1", 3, RunStatus.FAILED, "web1: check: segment 12 damaged")
    maintenance_run(c, "check", "web1", 1, RunStatus.SUCCEEDED)
    data = gather(c, now=now)
    assert (data.verdict, data.problems) == (
        "warn",
        [("warn", "web1: check failed during the period (recovered since)")],
    )
    history = render_text(data).split("Failures and losses in the period:\n")[1]
    at = r"\w{3} \d\d \d\d:\d\dZ"  # when the run started
    assert re.search(rf"  FAIL  {at} web1: check failed: segment 12 damaged", history)
    assert re.search(rf"  STOP  {at} web1: offsite interrupted: stopped at", history)

    maintenance_run(c, "offsite_drill", "web2", 0.1, RunStatus.FAILED, "shop: 3 rows, 4 recorded")
    maintenance_run(c, "compact", "gone-host", 2, RunStatus.FAILED, "no such repository")
    maintenance_run(c, "offsite_drill", "web2", 0.05, RunStatus.INTERRUPTED, "backupd stopped")
    later = utcnow() + timedelta(days=8)  # the next report: those runs are before its period
    data = gather(c, now=later, start=later - timedelta(days=7))
    fails = [why for lvl, why in data.problems if lvl == "fail"]
    assert fails == ["web2: offsite_drill failed: shop: 3 rows, 4 recorded"], data.problems
    assert data.maintenance_history == []
    assert data.headline.startswith("ACTION NEEDED (1 problem")


def test_a_copy_never_drilled_is_to_check_after_the_first_months_drill_was_due(
    tmp_path: Path,
) -> None:
    """The copy is drilled monthly: a copy made three days ago and not drilled yet is no
    problem; one copied for over 35 days and never proved to restore is to check (as the
    BackupdOffsiteNeverVerified rule says; found by a new-user trial: it was never said)."""
    (tmp_path / "eu.conf").write_text("type = s3\n")
    (tmp_path / "eu.conf").chmod(0o600)
    body = '[offsite.remotes.eu]\npath = "b/fleet"\nrclone = { file = "eu.conf" }\n'
    c = Context(load_config(write_config(tmp_path, FLEET, body)))
    for days in (36, 0.5):
        maintenance_run(c, "offsite", "web1", days, RunStatus.SUCCEEDED)
    for days in (3, 0.5):
        maintenance_run(c, "offsite", "web2", days, RunStatus.SUCCEEDED)
    checks = [why for lvl, why in gather(c).problems if "off site" in why or "off-site" in why]
    assert checks == ["web1: copied off site for 36d 0h, never proved to restore"], checks
    maintenance_run(c, "offsite_drill", "web1", 0.2, RunStatus.SUCCEEDED)
    assert not [why for _, why in gather(c).problems if "never proved" in why]


def test_what_failed_and_recovered_is_named_and_no_line_names_its_source_twice(
    tmp_path: Path,
) -> None:
    """A drill that failed and passed since is "a drill failed", not a bare "failed" read
    as a backup; a reason recorded with its "host/source: " lead loses it in the report,
    whose line begins with the source (found by a new-user trial)."""
    c = make_ctx(tmp_path)
    now = utcnow()
    all_good(c, now)
    with c.catalogue.session() as s:
        app = s.query(Source).filter_by(name="app").one()
        why = "web2/app: drill of app.1: app.db: file is not a database"
        drill(s, app, now - timedelta(days=2), "fail", 3.0, checks=[], detail=why)
    data = gather(c, now=now)
    assert data.problems == [
        ("warn", "web2/app: a drill failed during the period (recovered since)")
    ]
    text = render_text(data)
    assert "drill FAIL: drill of app.1: app.db: file is not a database" in text
    assert "web2/app: drill of" not in text
