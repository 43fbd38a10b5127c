"""Alerts to chat through Apprise (issue 17, decision 0027), against a real HTTP webhook on
loopback (Apprise's json:// posts to it as to any service): a failed backup reaches it;
while it is down the alert waits, and it is delivered once when it is back, never twice;
a good backup sends nothing; the URL's token is never printed nor stored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import Deployment, small_sqlite
from tests.harness.droplet import Droplet
from tests.harness.procs import free_port
from tests.harness.recorder import webhook_server
from tests.json_contract import conforming

pytestmark = pytest.mark.e2e

TOKEN = "hooks-7f3a9c2e51d04b8f"  # the secret part of the webhook's URL


def with_notify(d: Deployment, port: int) -> None:
    text = d.config.read_text().split("\n[notify]")[0]
    d.config.write_text(
        text + f'\n[notify]\nurls = ["json://127.0.0.1:{port}/{TOKEN}"]\ntimeout = 5\n'
    )


def test_a_failed_backup_reaches_a_chat_webhook_once_even_after_it_was_down(
    deploy: Callable[..., Deployment], droplet: Droplet
) -> None:
    db = small_sqlite(droplet, "chat")
    d = deploy(
        {
            "good": {"kind": "sqlite", "path": str(db)},
            "gone": {"kind": "sqlite", "path": "/nonexistent/app.db"},
        }
    )
    port = free_port()
    with_notify(d, port)

    # the webhook is down: the failure is recorded and waits for it
    d.backupctl("backup", "now", "web1/good", check=True)
    assert d.backupctl("backup", "now", "web1/gone").returncode == 1
    down = d.backupctl("alerts", "--send")
    assert down.returncode == 15, down.stderr  # not delivered: kept, and said so
    assert "0 chat notification(s) sent" in down.stderr, down.stderr
    output = d.backupctl("alerts", "--json", check=True).stdout
    [alert] = conforming("alerts", output)["alerts"]  # the good backup raised none
    assert alert["kind"] == "backup_failed"
    [waiting] = alert["notified"]
    assert waiting["sent"] is None and waiting["attempts"] == 1
    assert waiting["service"] == f"json://127.0.0.1:{port}"
    assert "Connection error" in waiting["last_error"]
    assert "no (1 try)" in d.backupctl("alerts", check=True).stdout

    with webhook_server(port) as (_, received):
        sent = d.backupctl("alerts", "--send", check=True)
        assert "1 chat notification(s) sent" in sent.stderr, sent.stderr
        again = d.backupctl("alerts", "--send", check=True)  # and the daemon's next look
        assert "0 chat notification(s) sent" in again.stderr
        d.backupctl("backup", "now", "web1/good", check=True)
        d.backupctl("alerts", "--send", check=True)
    [message] = received  # once, never twice; nothing for the good backups
    assert message["title"] == "[backupd] backup failed: web1/gone"
    assert "no such database file: /nonexistent/app.db" in str(message["message"])
    assert message["type"] == "failure"

    output = d.backupctl("alerts", "--json", check=True).stdout
    [alert] = conforming("alerts", output)["alerts"]
    [delivered] = alert["notified"]
    assert delivered["sent"] is not None and delivered["last_error"] is None
    assert alert["mailed"] is None  # no [mail]: chat works without it
    everything = output + down.stderr + sent.stderr
    assert TOKEN not in everything
    assert TOKEN.encode() not in (d.state_dir / "catalogue.db").read_bytes()


def test_a_url_apprise_cannot_read_is_a_config_error_that_does_not_repeat_it(
    deploy: Callable[..., Deployment],
) -> None:
    d = deploy({"gone": {"kind": "sqlite", "path": "/nonexistent/app.db"}})
    d.config.write_text(
        d.config.read_text() + f'\n[notify]\nurls = ["nosuchservice://{TOKEN}@example.org/x"]\n'
    )
    checked = d.backupctl("config", "check")
    assert checked.returncode == 2
    assert "notify.urls: URL 1 of 1: Apprise has no service 'nosuchservice'" in checked.stderr
    assert TOKEN not in checked.stdout + checked.stderr
    assert "Traceback" not in checked.stderr


def test_config_check_names_the_services_and_warns_when_others_may_read_their_tokens(
    deploy: Callable[..., Deployment], tmp_path: Path
) -> None:
    d = deploy({"gone": {"kind": "sqlite", "path": "/nonexistent/app.db"}})
    port = free_port()
    with_notify(d, port)

    def notify_checks() -> list[dict[str, object]]:
        output = d.backupctl("config", "check", "--json").stdout
        checks = conforming("config check", output)["checks"]
        assert TOKEN not in output
        return [c for c in checks if c["subject"] == "notify"]

    d.config.chmod(0o600)
    label = f"json://127.0.0.1:{port}"
    assert notify_checks() == [
        {"subject": "notify", "ok": True, "detail": f"1 service(s): {label}", "warning": False}
    ]
    d.config.chmod(0o644)
    [_, readable] = notify_checks()
    assert readable["warning"] and "chmod 600" in str(readable["detail"])

    urls = tmp_path / "notify-urls"  # the tokens in a file of their own, unreadable
    d.config.write_text(
        d.config.read_text().split("\n[notify]")[0]
        + f'\n[notify]\nurls_from = {{ file = "{urls}" }}\n'
    )
    [missing] = notify_checks()
    assert not missing["ok"] and "notify.urls_from: file" in str(missing["detail"])
