"""The backupd entry point without a droplet: OnFailure= alerts, JSON logs, one instance."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

BACKUPD = str(Path(sys.executable).parent / "backupd")

CONFIG = """
state_dir = "{state}"
[store]
path = "{store}"
[passphrase]
file = "{root}/passphrase"
[hosts.web1]
address = "192.0.2.1"
user = "backup"
key = "{root}/id"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVuaXQtdGVzdC1ub3QtYS1yZWFsLWtleQ"
[hosts.web1.sources.db]
kind = "sqlite"
path = "/srv/app.db"
"""


def write_config(root: Path) -> Path:
    path = root / "backupd.toml"
    path.write_text(CONFIG.format(state=root / "state", store=root / "store", root=root))
    return path


def test_unit_failed_records_an_alert_and_logs_json(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = subprocess.run(
        [BACKUPD, "--config", str(config), "--log-json", "--unit-failed", "backupd.service"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in result.stderr.splitlines() if x.strip()]  # all JSON
    (line,) = [x for x in lines if x["level"] == "error"]
    assert "backupd.service failed" in line["message"]
    with sqlite3.connect(tmp_path / "state" / "catalogue.db") as db:
        rows = db.execute("SELECT kind, message FROM alert_events").fetchall()
    assert rows == [("unit_failed", line["message"])]


def test_a_second_daemon_on_the_same_state_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    fd = os.open(state / "backupd.pid", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"4242\n")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running daemon holds it
        result = subprocess.run(
            [BACKUPD, "--config", str(config), "--once"],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        os.close(fd)
    assert result.returncode == 2
    assert "another backupd (pid 4242) is running" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_broken_config_is_one_clean_error(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    config.write_text(config.read_text() + '\n[daemon]\nschedule = "nightly"\nworkers = 0\n')
    result = subprocess.run(
        [BACKUPD, "--config", str(config)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "daemon.schedule: not a crontab schedule" in result.stderr
    assert "daemon.workers" in result.stderr and "Traceback" not in result.stderr


def test_backupctl_offers_shell_completion() -> None:
    backupctl = str(Path(sys.executable).parent / "backupctl")
    script = subprocess.run(
        [backupctl],
        env={**os.environ, "_BACKUPCTL_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "_backupctl_completion" in script
    env = {
        **os.environ,
        "_BACKUPCTL_COMPLETE": "bash_complete",
        "COMP_WORDS": "backupctl ar",
        "COMP_CWORD": "1",
    }
    answer = subprocess.run([backupctl], env=env, capture_output=True, text=True, check=True)
    assert answer.stdout.split() == ["plain,archives"]


def test_unit_failed_with_an_invalid_config_still_says_why(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    config.write_text(config.read_text() + "\n[daemon]\nworkers = 0\n")
    result = subprocess.run(
        [BACKUPD, "--config", str(config), "--unit-failed", "backupd.service"],
        capture_output=True,
        text=True,
        check=False,
    )
    if Path("/var/lib/backupd/catalogue.db").exists():  # recorded in the default catalogue
        assert result.returncode == 0
    else:  # nowhere to record it: the journal line is all there is, and the exit says so
        assert result.returncode == 1
    assert "systemd unit backupd.service failed; its configuration is invalid" in result.stderr
    assert "daemon.workers" in result.stderr and "Traceback" not in result.stderr


def test_borg_missing_on_the_backup_host_is_named_not_a_borg_failure(tmp_path: Path) -> None:
    """Not a borg failure (exit 7) and not a traceback: the program is not installed.
    ``config check`` says so on a line of its own and goes on with the other checks."""
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("[store]\n", '[store]\nborg = "no-such-borg"\n'))
    (tmp_path / "store").mkdir()
    backupctl = str(Path(sys.executable).parent / "backupctl")
    result = subprocess.run(
        [backupctl, "--config", str(config), "config", "check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    out = result.stdout + result.stderr
    assert "'no-such-borg': not found on the backup host (install borgbackup" in out
    assert "web1" in out  # the droplet was still checked (unreachable here)
