"""Queued reports and alerts are mailed once while several senders deliver at the same time
(decision 0012). Two real `backupctl` processes and a direct call race over one catalogue
(SQLite, and PostgreSQL), and the SMTP server (aiosmtpd) holds every message at DATA until
all three senders have one in flight: each had read the queue before any could mark a row
sent. A stale claim is taken over, a live one is left alone, a failed send releases its rows,
and the rate limit holds with two dispatchers."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select, update

from backupd.actions.alerts import dispatch
from backupd.actions.context import Context
from backupd.actions.report import deliver_queued, queue_report
from backupd.catalogue.alerts import SUPPRESSED
from backupd.catalogue.models import AlertEvent, AlertKey, Report, utcnow
from backupd.notify.mail import claim_lease
from jobs.registry import load_config
from tests.e2e.conftest import BIN, run_tool
from tests.harness.example_report import write_config
from tests.harness.smtp import DataGate, SmtpServer, start_smtp

pytestmark = pytest.mark.e2e

REPORTS = 12
KEYS = 8
SENDERS = 3  # two backupctl processes and one direct call
DB = "backupd_claims"
SAFETY = 600  # seconds: only against a hang; every wait below ends on an event
T = TypeVar("T")


@pytest.fixture(params=["sqlite", "postgresql"])
def catalogue_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None: the default SQLite file in the state directory."""
    if request.param == "sqlite":
        yield None
        return
    cluster = request.getfixturevalue("pg_cluster")
    cluster.psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    cluster.createdb(DB)
    yield (
        f"postgresql+psycopg://{cluster.superuser}@/{DB}"
        f"?host={cluster.socket_dir}&port={cluster.port}"
    )
    cluster.psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A server of this test's own: its gate and its messages are the test's."""
    server = start_smtp()
    yield server
    server.stop()


@pytest.fixture
def contexts() -> Iterator[Callable[[Path], Context]]:
    """Contexts over a config; their catalogue connections are closed at the end."""
    made: list[Context] = []

    def make(config: Path) -> Context:
        made.append(Context(load_config(config)))
        return made[-1]

    yield make
    for ctx in made:
        ctx.catalogue.engine.dispose()


def mail_config(root: Path, port: int, catalogue_url: str | None = None) -> Path:
    """A long SMTP timeout: a message held at the gate must not time its sender out."""
    extra = (
        f'[mail]\nto = ["ops@example.org"]\nsender = "backupd@claims.test"\n'
        f'host = "127.0.0.1"\nport = {port}\nsecurity = "none"\ntimeout = "5m"\n'
        'retry = "1m"\n'
    )
    if catalogue_url is not None:
        extra += f'[catalogue]\nurl = "{catalogue_url}"\n'
    return write_config(root, {"web1": {}}, extra)


def queue_reports(ctx: Context, n: int) -> list[int]:
    now = utcnow()
    ids = []
    for i in range(n):
        msg = EmailMessage()
        msg["Subject"], msg["From"], msg["To"] = f"report {i}", "backupd@claims.test", "ops"
        msg.set_content(f"report {i}\n")
        ids.append(
            queue_report(
                ctx, msg, period_start=now - timedelta(days=7), period_end=now, verdict="pass"
            )
        )
    return ids


def record_alerts(ctx: Context, keys: int, per_key: int = 2) -> None:
    for i in range(keys):
        for j in range(per_key):
            ctx.catalogue.record_alert(
                "backup_failed", f"web1/s{i}: failure {j}", host="web1", source=f"s{i}"
            )


def backupctl(config: Path, *args: str) -> subprocess.Popen[str]:
    argv = [str(BIN / "backupctl"), "--config", str(config), *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def race(config: Path, args: tuple[str, ...], direct: Callable[[], T]) -> tuple[list[str], T]:
    """Two `backupctl ARGS` and ``direct()`` at once; their stdout + stderr, and what
    ``direct`` returned. Every process is ended, also on failure."""
    procs = [backupctl(config, *args) for _ in range(SENDERS - 1)]
    try:
        with ThreadPoolExecutor(1) as pool:
            returned = pool.submit(direct)
            outputs = [p.communicate(timeout=SAFETY) for p in procs]
            value = returned.result(timeout=SAFETY)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert [p.returncode for p in procs] == [0] * len(procs), outputs
    return [out + err for out, err in outputs], value


def ctl(config: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return run_tool("backupctl", "--config", str(config), *args, check=check)


def subjects(server: SmtpServer) -> list[str]:
    return sorted(str(m.message["Subject"]) for m in server.messages)


def raced(gate: DataGate) -> None:
    """All senders had a message held at DATA at once, and the gate never timed out."""
    assert gate.most_waiting == SENDERS and not gate.timed_out


def set_claim(ctx: Context, model: Any, where: Any, token: str, at: datetime) -> None:
    with ctx.catalogue.session() as s:
        s.execute(update(model).where(where).values(claimed_by=token, claimed_at=at))


Mailing = tuple[Path, Context]


@pytest.fixture
def mailing(smtp: SmtpServer, tmp_path: Path, contexts: Callable[[Path], Context]) -> Mailing:
    """A config mailing to ``smtp`` over a SQLite catalogue, and a context over it."""
    config = mail_config(tmp_path, smtp.port)
    return config, contexts(config)


# -- concurrent senders: each report, each alert key, mailed exactly once -----------------
@dataclass
class Senders:
    config: Path
    ctx: Context  # the test's, to fill and read the catalogue
    direct: Context  # the third sender's, in this process


@pytest.fixture
def senders(
    catalogue_url: str | None,
    smtp: SmtpServer,
    tmp_path: Path,
    contexts: Callable[[Path], Context],
) -> Senders:
    """A config over the catalogue under test; the server's gate waits for all senders."""
    config = mail_config(tmp_path, smtp.port, catalogue_url)
    smtp.gate = DataGate(senders=SENDERS)
    return Senders(config, contexts(config), contexts(config))


def test_concurrent_senders_mail_every_queued_report_once(
    senders: Senders, smtp: SmtpServer
) -> None:
    ctx = senders.ctx
    ids = queue_reports(ctx, REPORTS)
    outputs, delivery = race(
        senders.config, ("report", "--retry"), lambda: deliver_queued(senders.direct, force=True)
    )
    assert smtp.gate is not None
    raced(smtp.gate)
    assert subjects(smtp) == sorted(f"report {i}" for i in range(REPORTS))  # each once
    by_cli = [int(n) for out in outputs for n in re.findall(r"report (\d+): sent", out)]
    assert sorted(by_cli + delivery.sent) == ids  # every sender says what it sent: no overlap
    assert delivery.failed == []
    rows = ctx.catalogue.reports(limit=REPORTS)
    assert {(r.status, r.attempts, r.claimed_by) for r in rows} == {("sent", 1, None)}


def test_concurrent_dispatchers_mail_every_alert_key_once(
    senders: Senders, smtp: SmtpServer
) -> None:
    ctx = senders.ctx
    record_alerts(ctx, KEYS)
    outputs, mailed = race(senders.config, ("alerts", "--send"), lambda: dispatch(senders.direct))
    assert smtp.gate is not None
    raced(smtp.gate)
    assert subjects(smtp) == sorted(f"[backupd] backup failed: web1/s{i}" for i in range(KEYS))
    for m in smtp.messages:  # both events of the key, in the one mail
        body = m.message.get_content()
        assert "failure 0" in body and "failure 1" in body and "(2 alerts with" in body
    by_cli = [int(n) for out in outputs for n in re.findall(r"(\d+) mail\(s\) sent", out)]
    assert sum(by_cli) + mailed == KEYS
    events = ctx.catalogue.alerts()
    assert len(events) == 2 * KEYS
    assert all(e.sent_at and e.last_error is None and e.claimed_by is None for e in events)
    with ctx.catalogue.session() as s:
        assert s.scalars(select(AlertKey.claimed_by)).all() == [None] * KEYS


def test_the_rate_limit_holds_with_two_dispatchers(smtp: SmtpServer, mailing: Mailing) -> None:
    """A dispatcher mails a key (held at DATA); a new event of that key arrives; a second
    dispatcher must neither mail it (the mail in flight is within the interval) nor fold it
    into a mail that does not contain it. After the first one is done, it is folded."""
    config, ctx = mailing
    record_alerts(ctx, keys=1)
    smtp.gate = DataGate()  # opened by the test
    first = backupctl(config, "alerts", "--send")
    try:
        assert smtp.gate.held.wait(SAFETY), "the first dispatcher never reached DATA"
        late = ctx.catalogue.record_alert(
            "backup_failed", "web1/s0: failure 2", host="web1", source="s0"
        )
        second = ctl(config, "alerts", "--send", check=True)
        assert "0 mail(s) sent" in second.stderr  # the key is being mailed by the first
        smtp.gate.open()
        _out, err = first.communicate(timeout=SAFETY)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 0 and "1 mail(s) sent" in err, err
    third = ctl(config, "alerts", "--send", check=True)
    assert "0 mail(s) sent" in third.stderr and not smtp.gate.timed_out
    [mail] = smtp.messages
    assert "failure 1" in mail.message.get_content()
    assert "failure 2" not in mail.message.get_content()
    folded = next(e for e in ctx.catalogue.alerts() if e.id == late)
    assert folded.sent_at is not None and (folded.last_error or "").startswith(SUPPRESSED)
    assert folded.claimed_by is None


# -- claims of senders that died, or still live --------------------------------------------
def test_a_stale_report_claim_is_taken_over_and_a_live_one_left_alone(
    smtp: SmtpServer, mailing: Mailing
) -> None:
    config, ctx = mailing
    crashed, live = queue_reports(ctx, 2)
    assert ctx.config.mail is not None
    lease = claim_lease(ctx.config.mail)
    set_claim(ctx, Report, Report.id == crashed, "gone:4242:0ld", utcnow() - lease * 1.1)
    set_claim(ctx, Report, Report.id == live, "busy:4343:n0w", utcnow())
    out = ctl(config, "report", "--retry", check=True)
    assert out.stdout == f"report {crashed}: sent\nreport {live}: taken by another sender\n"
    assert subjects(smtp) == ["report 0"]
    taken, left = ctx.catalogue.report(crashed), ctx.catalogue.report(live)
    assert (taken.status, taken.attempts, taken.claimed_by) == ("sent", 1, None)
    assert (left.status, left.attempts, left.claimed_by) == ("queued", 0, "busy:4343:n0w")


def test_a_stale_alert_claim_is_taken_over_and_a_live_one_left_alone(
    smtp: SmtpServer, mailing: Mailing
) -> None:
    config, ctx = mailing
    record_alerts(ctx, keys=2)
    assert ctx.config.mail is not None
    old = utcnow() - claim_lease(ctx.config.mail) * 1.1
    with ctx.catalogue.session() as s:  # s0: a dispatcher died mid-send; s1: one is sending
        s.add(AlertKey(dedup_key="backup_failed:web1/s0", claimed_by="gone:1:x", claimed_at=old))
        s.add(
            AlertKey(dedup_key="backup_failed:web1/s1", claimed_by="busy:2:y", claimed_at=utcnow())
        )
    set_claim(ctx, AlertEvent, AlertEvent.source == "s0", "gone:1:x", old)
    set_claim(ctx, AlertEvent, AlertEvent.source == "s1", "busy:2:y", utcnow())
    sent = ctl(config, "alerts", "--send", check=True)
    assert "1 mail(s) sent" in sent.stderr
    assert subjects(smtp) == ["[backupd] backup failed: web1/s0"]
    events = ctx.catalogue.alerts()
    assert all(e.sent_at and e.claimed_by is None for e in events if e.source == "s0")
    assert all(e.sent_at is None and e.claimed_by == "busy:2:y" for e in events if e.source == "s1")


# -- a failed send releases what it claimed ------------------------------------------------
def test_a_refused_report_is_released_and_sent_by_the_next_retry(
    smtp: SmtpServer, mailing: Mailing
) -> None:
    config, ctx = mailing
    [report] = queue_reports(ctx, 1)
    smtp.refuse = "554 5.7.1 not today"
    refused = ctl(config, "report", "--retry")
    assert refused.returncode == 15 and "554 5.7.1 not today" in refused.stderr
    row = ctx.catalogue.report(report)
    assert (row.status, row.attempts, row.claimed_by, row.claimed_at) == ("queued", 1, None, None)
    smtp.refuse = None
    again = ctl(config, "report", "--retry", check=True)
    assert again.stdout == f"report {report}: sent\n" and subjects(smtp) == ["report 0"]


def test_a_refused_alert_is_released_and_mailed_at_the_next_look(
    smtp: SmtpServer, mailing: Mailing
) -> None:
    config, ctx = mailing
    record_alerts(ctx, keys=1)
    smtp.refuse = "554 5.7.1 not today"
    refused = ctl(config, "alerts", "--send")
    assert refused.returncode == 15 and "0 mail(s) sent" in refused.stderr
    events = ctx.catalogue.alerts()
    assert all(e.sent_at is None and e.attempts == 1 and e.claimed_by is None for e in events)
    assert all("554 5.7.1 not today" in (e.last_error or "") for e in events)
    with ctx.catalogue.session() as s:
        assert s.scalars(select(AlertKey.claimed_by)).all() == [None]
    smtp.refuse = None
    again = ctl(config, "alerts", "--send", check=True)
    assert "1 mail(s) sent" in again.stderr
    assert subjects(smtp) == ["[backupd] backup failed: web1/s0"]
