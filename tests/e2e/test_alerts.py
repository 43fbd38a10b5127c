"""Alerts mailed through a real SMTP server (aiosmtpd): at once, one mail per cause and
interval, never lost while the server is down; stale sources and a filling store found."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Deployment, small_sqlite
from tests.harness.droplet import Droplet
from tests.harness.procs import free_port
from tests.harness.recorder import recording_server
from tests.harness.smtp import SmtpServer, start_smtp_starttls, start_smtp_tls
from tests.json_contract import conforming

pytestmark = pytest.mark.e2e


def with_mail(d: Deployment, port: int, extra: str = "", security: str = "none") -> None:
    text = d.config.read_text()
    text = text.split("\n[mail]")[0]  # replace an earlier [mail]
    d.config.write_text(
        text
        + f"""
[mail]
to = ["ops@example.org"]
sender = "backupd@try.example.org"
host = "127.0.0.1"
port = {port}
security = "{security}"
timeout = 5
{extra}"""
    )


def alert_rows(d: Deployment) -> list[dict[str, object]]:
    output = d.backupctl("alerts", "--json", check=True).stdout
    rows: list[dict[str, object]] = conforming("alerts", output)["alerts"]
    return rows


def test_alerts_are_mailed_once_per_cause_and_kept_while_smtp_is_down(
    deploy: Callable[..., Deployment], smtp_server: SmtpServer
) -> None:
    d = deploy({"gone": {"kind": "sqlite", "path": "/nonexistent/app.db"}})
    closed = free_port()
    with_mail(d, closed)
    assert d.backupctl("backup", "now", "web1/gone").returncode == 1
    with sqlite3.connect(d.state_dir / "catalogue.db") as db:  # it used to work, weeks ago
        db.execute(
            "UPDATE runs SET status = 'succeeded', error = NULL, "
            "finished_at = '2026-10-01 02:00:00'"
        )
    assert d.backupctl("backup", "now", "web1/gone").returncode == 1
    down = d.backupctl("alerts", "--send")
    assert down.returncode == 15 and "0 mail(s) sent" in down.stderr
    rows = alert_rows(d)
    kinds = {r["kind"] for r in rows}
    assert {"backup_failed", "source_stale"} <= kinds
    assert all(r["mailed"] is None for r in rows)
    assert any(r["attempts"] == 1 and "127.0.0.1" in str(r["last_error"]) for r in rows)

    before = len(smtp_server.messages)
    with_mail(d, smtp_server.port)
    sent = d.backupctl("alerts", "--send", check=True)
    assert "2 mail(s) sent" in sent.stderr, sent.stderr
    mails = smtp_server.wait_for_messages(before + 2)[before:]
    subjects = sorted(str(m.message["Subject"]) for m in mails)
    assert subjects == ["[backupd] backup failed: web1/gone", "[backupd] source stale: web1/gone"]
    stale = next(m for m in mails if "stale" in str(m.message["Subject"])).message
    assert "no successful backup since 2026-10-01T02:00:00+00:00" in stale.get_content()
    body = next(m for m in mails if "failed" in str(m.message["Subject"])).message
    assert "no such database file: /nonexistent/app.db" in body.get_content()

    # the same failure again within the interval: recorded, folded, not mailed again
    assert d.backupctl("backup", "now", "web1/gone").returncode == 1
    d.backupctl("alerts", "--send", check=True)
    assert len(smtp_server.messages) == before + 2
    newest = alert_rows(d)[0]
    assert newest["kind"] == "backup_failed" and newest["folded"]
    assert "folded" in d.backupctl("alerts").stdout


def test_a_filling_store_is_an_alert(
    deploy: Callable[..., Deployment], smtp_server: SmtpServer
) -> None:
    d = deploy({"gone": {"kind": "sqlite", "path": "/nonexistent/app.db"}})
    d.store.mkdir(parents=True, exist_ok=True)
    with_mail(d, smtp_server.port)
    with d.config.open("a") as f:
        f.write("\n[alerts]\ndisk_warn_percent = 0.001\ndisk_critical_percent = 100\n")
    before = len(smtp_server.messages)
    d.backupctl("alerts", "--send", check=True)
    mails = smtp_server.wait_for_messages(before + 1)[before:]
    disk = [m for m in mails if "disk warning" in str(m.message["Subject"])]
    assert len(disk) == 1 and "% full (warning threshold reached)" in disk[0].message.get_content()


@pytest.fixture
def ping_server() -> Iterator[tuple[str, list[str]]]:
    """A dead-man's-switch endpoint on loopback that records the paths it was asked for."""
    with recording_server() as server:
        yield server


def test_ping_urls_hear_the_start_success_and_failure(
    deploy: Callable[..., Deployment], droplet: Droplet, ping_server: tuple[str, list[str]]
) -> None:
    base, seen = ping_server
    db = small_sqlite(droplet, "ping")
    d = deploy(
        {
            "good": {"kind": "sqlite", "path": str(db), "ping_url": f"{base}/uuid-good"},
            "bad": {"kind": "sqlite", "path": "/nonexistent/x.db", "ping_url": f"{base}/uuid-bad"},
        }
    )
    d.backupctl("backup", "now", "web1/good", check=True)
    assert d.backupctl("backup", "now", "web1/bad").returncode == 1
    # healthchecks.io style: /start as a run begins; the end: the URL, or the exit status
    assert seen == ["/uuid-good/start", "/uuid-good", "/uuid-bad/start", "/uuid-bad/6"]


def test_mail_over_starttls_with_a_login_from_a_credential_file(
    deploy: Callable[..., Deployment], tmp_path: Path
) -> None:
    server, ca = start_smtp_starttls(tmp_path, "backupd", "s3cret pass")
    try:
        secret = tmp_path / "smtp-password"
        secret.write_text("s3cret pass\n")
        secret.chmod(0o600)
        d = deploy({"gone": {"kind": "sqlite", "path": "/nonexistent/app.db"}})
        assert d.backupctl("backup", "now", "web1/gone").returncode == 1
        login = f'username = "backupd"\nca_file = "{ca}"\n'
        with_mail(
            d,
            server.port,
            login + '[mail.password]\nfile = "/nonexistent/pw"\n',
            security="starttls",
        )
        missing = d.backupctl("alerts", "--send")
        assert missing.returncode == 15 and "0 mail(s) sent" in missing.stderr
        [row] = alert_rows(d)
        assert "cannot read the password" in str(row["last_error"])
        with_mail(
            d, server.port, login + f'[mail.password]\nfile = "{secret}"\n', security="starttls"
        )
        sent = d.backupctl("alerts", "--send", check=True)
        assert "1 mail(s) sent" in sent.stderr, sent.stderr
        [mail] = server.wait_for_messages(1)
        assert mail.message["Subject"] == "[backupd] backup failed: web1/gone"
        assert b"s3cret" not in (d.state_dir / "catalogue.db").read_bytes()
    finally:
        server.stop()


def test_a_wrong_smtp_login_is_one_clear_line(
    deploy: Callable[..., Deployment], tmp_path: Path
) -> None:
    server, ca = start_smtp_starttls(tmp_path, "backupd", "right")
    try:
        secret = tmp_path / "smtp-password"
        secret.write_text("wrong\n")
        secret.chmod(0o600)
        d = deploy({"gone": {"kind": "sqlite", "path": "/nonexistent/app.db"}})
        assert d.backupctl("backup", "now", "web1/gone").returncode == 1
        with_mail(
            d,
            server.port,
            f'username = "backupd"\nca_file = "{ca}"\n[mail.password]\nfile = "{secret}"\n',
            security="starttls",
        )
        refused = d.backupctl("alerts", "--send")
        assert refused.returncode == 15  # not delivered: kept, and the exit code says so
        [row] = alert_rows(d)
        assert row["mailed"] is None and "log in as backupd failed: 535" in str(row["last_error"])
        assert server.messages == []
    finally:
        server.stop()


def test_mail_over_implicit_tls_checks_the_certificate(
    deploy: Callable[..., Deployment], tmp_path: Path
) -> None:
    server, ca = start_smtp_tls(tmp_path)
    try:
        d = deploy({"gone": {"kind": "sqlite", "path": "/nonexistent/app.db"}})
        assert d.backupctl("backup", "now", "web1/gone").returncode == 1
        with_mail(d, server.port, security="tls")  # the system CAs do not know this server
        assert d.backupctl("alerts", "--send").returncode == 15
        [row] = alert_rows(d)
        assert row["mailed"] is None and "CERTIFICATE_VERIFY_FAILED" in str(row["last_error"])
        with_mail(d, server.port, f'ca_file = "{ca}"\n', security="tls")
        d.backupctl("alerts", "--send", check=True)
        [mail] = server.wait_for_messages(1)
        assert mail.message["Subject"] == "[backupd] backup failed: web1/gone"
    finally:
        server.stop()
