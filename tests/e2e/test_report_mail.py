"""The weekly report through a real SMTP server (aiosmtpd): received, parsed (both parts,
the images); with SMTP down it stays queued in the catalogue and goes out once it is back,
from `backupctl report --retry` and from the daemon's worker running the report job."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from backupd.actions.context import Context
from backupd.catalogue.models import Drill, utcnow
from jobs.registry import load_config
from tests.e2e.conftest import Deployment
from tests.harness.droplet import Droplet
from tests.harness.smtp import SmtpServer

pytestmark = pytest.mark.e2e

DAMAGED = "archive: borg extract: Data integrity error: Segment entry checksum mismatch"
ROWS = "rows: orders: 14999 rows, 15000 recorded at backup time"
RED_CELL = re.compile(r'<td class="fail" style="color:#b00020;font-weight:bold;[^"]*">([^<]*)</td>')


@pytest.fixture
def files(droplet: Droplet) -> Iterator[Path]:
    root = droplet.root / "srv" / "report-files"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for i in range(20):
        (root / f"f{i}.txt").write_text(f"file {i}\n" * 200)
    subprocess.run(["chown", "-R", f"{droplet.user}:", str(root)], check=False)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def set_mail(d: Deployment, port: int, to: str) -> None:
    """(Re)write the [mail] table at the end of the config."""
    text = d.config.read_text().split("\n[mail]\n")[0]
    d.config.write_text(
        text.rstrip("\n") + f'\n\n[mail]\nto = ["{to}"]\nhost = "127.0.0.1"\n'
        f'port = {port}\nsecurity = "none"\nsender = "backupd@backup.test"\n'
        'timeout = "5s"\nretry = "1m"\n'
    )


def received_by(server: SmtpServer, to: str) -> list[EmailMessage]:
    return [m.message for m in server.messages if to in m.rcpt_tos]


def record_failed_drills(d: Deployment) -> None:
    """The two ways a drill fails (a damaged archive, rows that differ from the recorded
    facts), as the drill records them (the drill itself is tested with drills)."""
    ctx = Context(load_config(d.config))
    now = utcnow()
    with ctx.catalogue.session() as s:
        for source, check in (("files", DAMAGED), ("maindb", ROWS)):
            name, _, detail = check.partition(": ")
            checks = [
                {"check": "sha256", "ok": True, "detail": "matches"},
                {"check": name, "ok": False, "detail": detail},
            ]
            s.add(
                Drill(
                    host="web1",
                    source=source,
                    repository=str(d.store / "web1"),
                    archive=f"{source}.x",
                    trigger="schedule",
                    status="fail",
                    started_at=now - timedelta(minutes=5),
                    finished_at=now,
                    rto_seconds=42.0,
                    nbytes=0,
                    checks=checks,
                )
            )


@pytest.fixture
def deployed(deploy: Callable[..., Deployment], files: Path) -> Deployment:
    d = deploy(
        {
            "files": {"kind": "directory", "path": str(files)},
            "maindb": {"kind": "postgresql", "databases": ["nowhere"]},
        }
    )
    d.backupctl("backup", "now", "web1/files", check=True)
    record_failed_drills(d)
    return d


def check_report(msg: EmailMessage) -> str:
    """Both parts and the images of a received report; the HTML."""
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["Subject"].startswith("[backupd] ACTION NEEDED")
    text_part, related = msg.iter_parts()
    text = text_part.get_content()
    assert text.splitlines()[0].startswith("ACTION NEEDED")
    assert "FAIL  web1/files: last restore drill FAILED: " + DAMAGED in text
    assert "FAIL  web1/maindb: last restore drill FAILED: " + ROWS in text
    assert related.get_content_type() == "multipart/related"
    html_part, *images = related.iter_parts()
    assert html_part.get_content_type() == "text/html"
    page = html_part.get_content()
    red = RED_CELL.findall(page)
    assert red.count("FAIL") == 2  # both drills, in red
    assert any(DAMAGED in c for c in red) and any(ROWS in c for c in red)
    assert any(c.startswith("STALE") for c in red)  # maindb never backed up
    assert len(images) == 2
    for image in images:
        assert image.get_content_type() == "image/png"
        assert image.get_content()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="cid:{image["Content-ID"].strip("<>")}"' in page
    return str(page)


def test_report_send_is_received_with_both_parts_and_the_charts(
    deployed: Deployment, smtp_server: SmtpServer
) -> None:
    to = f"ops-{uuid.uuid4().hex[:8]}@example.org"
    set_mail(deployed, smtp_server.port, to)
    sent = deployed.backupctl("report", "--send", check=True)
    assert re.search(r"report (\d+): ACTION NEEDED .*, queued\nreport \1: sent", sent.stdout)
    smtp_server.wait_for_messages(1)
    (msg,) = received_by(smtp_server, to)
    assert msg["From"] == "backupd@backup.test" and msg["To"] == to
    check_report(msg)
    [(status, attempts, sent_at, recipients)] = deployed.catalogue_rows(
        "SELECT status, attempts, sent_at, recipients FROM reports"
    )
    assert (status, attempts, recipients) == ("sent", 1, f'["{to}"]') and sent_at
    assert "sent" in deployed.backupctl("report", check=True).stdout  # the listing


def test_smtp_down_keeps_the_report_queued_until_it_is_back(
    deployed: Deployment, smtp_server: SmtpServer
) -> None:
    to = f"ops-{uuid.uuid4().hex[:8]}@example.org"
    port = closed_port()
    set_mail(deployed, port, to)
    down = deployed.backupctl("report", "--send")
    assert down.returncode == 15
    error = down.stderr.strip()
    assert "\n" not in error  # one line, no traceback
    assert re.fullmatch(
        rf"backupctl: error: report\(s\) 1 still queued: SMTP 127\.0\.0\.1:{port}"
        r" \(none\): connect failed: .*[Rr]efused.*",
        error,
    )
    [(status, attempts, last_error, due)] = deployed.catalogue_rows(
        "SELECT status, attempts, last_error, next_attempt_at FROM reports"
    )
    assert (status, attempts) == ("queued", 1) and due
    assert isinstance(last_error, str) and "connect failed" in last_error

    set_mail(deployed, smtp_server.port, to)
    back = deployed.backupctl("report", "--retry", check=True)
    assert back.stdout == "report 1: sent\n"
    smtp_server.wait_for_messages(1)
    assert len(received_by(smtp_server, to)) == 1
    check_report(received_by(smtp_server, to)[0])
    again = deployed.backupctl("report", "--retry", check=True)
    assert again.stdout == "no report queued\n"
    assert len(received_by(smtp_server, to)) == 1  # delivered once
    [(status, attempts)] = deployed.catalogue_rows("SELECT status, attempts FROM reports")
    assert (status, attempts) == ("sent", 2)


def worker(d: Deployment) -> subprocess.CompletedProcess[str]:
    """The report job as the daemon runs it (scheduled from [maintenance] report)."""
    argv = [sys.executable, "-m", "backupd.daemon.worker", "--config", str(d.config), "report"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def test_the_report_job_queues_when_smtp_is_down_and_its_retry_delivers(
    deployed: Deployment, smtp_server: SmtpServer
) -> None:
    to = f"ops-{uuid.uuid4().hex[:8]}@example.org"
    set_mail(deployed, closed_port(), to)
    first = worker(deployed)
    assert first.returncode == 75, first.stderr  # transient: the daemon retries the job
    assert "queued, not delivered" in first.stderr
    set_mail(deployed, smtp_server.port, to)
    retried = worker(deployed)
    assert retried.returncode == 0, retried.stderr
    smtp_server.wait_for_messages(1)
    assert len(received_by(smtp_server, to)) == 1
    rows = deployed.catalogue_rows("SELECT status, attempts FROM reports")
    assert rows == [("sent", 2)]  # the retry built no second report
    runs = deployed.catalogue_rows(
        "SELECT status, summary, error FROM maintenance_runs WHERE job = 'report' ORDER BY id"
    )
    assert [r[0] for r in runs] == ["failed", "succeeded"]
    assert "built earlier; mail: 1 sent" in str(runs[1][1])
