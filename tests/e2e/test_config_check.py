"""backupctl config check against a real droplet: what passes, what fails, and why."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import Deployment, small_sqlite
from tests.e2e.test_daemon import other_host_key
from tests.harness.droplet import Droplet
from tests.json_contract import conforming

pytestmark = pytest.mark.e2e


def test_config_check_reports_each_host_and_source(
    deploy: Callable[..., Deployment], droplet: Droplet
) -> None:
    db = small_sqlite(droplet, "check")
    broken = {"kind": "sqlite", "path": str(db), "sqlite3": "/opt/none/sqlite3"}
    gone = {"kind": "sqlite", "path": str(db.parent / "gone.db")}  # tonight's dump would fail
    d = deploy({"app": {"kind": "sqlite", "path": str(db)}, "broken": broken, "gone": gone})
    d.store.mkdir(parents=True, exist_ok=True)
    result = d.backupctl("config", "check", "--json")
    assert result.returncode == 1, result.stderr
    checks = {c["subject"]: c for c in conforming("config check", result.stdout)["checks"]}
    assert checks["config"]["ok"] and checks["store"]["ok"] and checks["passphrase"]["ok"]
    assert checks["web1"]["ok"] and "host key matches" in checks["web1"]["detail"]
    ungated = checks["web1 gate"]  # not an error, but someone should know
    assert ungated["ok"] and ungated["warning"] and "may run any command" in ungated["detail"]
    assert checks["web1/app"]["ok"] and "app.db" in checks["web1/app"]["detail"]
    failed = checks["web1/broken"]
    assert not failed["ok"] and failed["detail"] == "not found on the droplet: /opt/none/sqlite3"
    missing = checks["web1/gone"]
    assert not missing["ok"] and "no such database file: " in missing["detail"]
    text = d.backupctl("config", "check").stdout
    assert "FAIL  web1/broken: not found on the droplet" in text


def test_config_check_refuses_a_changed_host_key(
    deploy: Callable[..., Deployment], tmp_path: object
) -> None:
    d = deploy(
        {"app": {"kind": "sqlite", "path": "/nonexistent.db"}},
        host_key=other_host_key(Path(str(tmp_path))),
    )
    result = d.backupctl("config", "check")
    assert result.returncode == 1
    assert "FAIL  web1: " in result.stdout and "HOST KEY CHANGED" in result.stdout
    assert "web1/app" not in result.stdout  # nothing is tried on an untrusted host
