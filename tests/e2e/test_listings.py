"""backupctl status, archives and runs over a real backup and a real failure."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.conftest import Deployment
from tests.harness.droplet import Droplet
from tests.json_contract import conforming

pytestmark = pytest.mark.e2e


@pytest.fixture
def listed(deploy: Callable[..., Deployment], droplet: Droplet) -> Deployment:
    path = droplet.root / "listing" / "notes.db"
    path.parent.mkdir(exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
        db.executemany("INSERT INTO notes (body) VALUES (?)", [(f"n{i}" * 30,) for i in range(999)])
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", droplet.user, str(path.parent)], check=True)
    d = deploy(
        {
            "notes": {"kind": "sqlite", "path": str(path)},
            "gone": {"kind": "sqlite", "path": str(path.parent / "missing.db")},
        }
    )
    d.backupctl("backup", "now", "web1")  # notes succeeds, gone fails
    return d


def test_status_flags_what_is_stale_and_exits_1(listed: Deployment) -> None:
    result = listed.backupctl("status", "--json")
    assert result.returncode == 1
    data = conforming("status", result.stdout)
    rows = {r["source"]: r for r in data["sources"]}
    assert rows["gone"]["stale"] and rows["gone"]["last_status"] == "failed"
    assert "no such database file" in rows["gone"]["last_error"]
    ok = rows["notes"]
    assert not ok["stale"] and ok["last_status"] == "succeeded" and ok["archives"] == 1
    assert ok["stored_bytes"] > 0 and ok["dedup_ratio"] is not None and ok["next_run"]
    assert data["queue"] == []
    text = listed.backupctl("status").stdout
    assert "STALE" in text and "web1/gone: stale" in text
    assert ok["last_drill"] is None and "LAST DRILL" in text and "never" in text
    assert rows["gone"]["last_failure"] and "no such database file" in str(
        rows["gone"]["last_failure_error"]
    )


def test_status_shows_the_last_drill_verdict(listed: Deployment) -> None:
    """The newest finished drill per source (drills are recorded by issue 6's drill job)."""
    with sqlite3.connect(listed.state_dir / "catalogue.db") as db:
        for status, rto in (("fail", 3.0), ("pass", 12.4), ("running", None)):
            db.execute(
                "INSERT INTO drills (host, source, repository, archive, trigger, status, "
                "started_at, finished_at, rto_seconds, nbytes, checks) VALUES ('web1', 'notes', "
                "'r', 'a', 'schedule', ?, '2026-11-24 04:00:00', '2026-11-24 04:01:00', ?, 0, "
                "'[]')",
                (status, rto),
            )
    rows: dict[str, Any] = {str(r["source"]): r for r in listed.status()}
    assert rows["notes"]["last_drill"]["verdict"] == "pass"
    assert rows["notes"]["last_drill"]["rto_seconds"] == 12.4
    assert "pass 12s 2026-11-24" in listed.backupctl("status").stdout


def test_archives_lists_the_restore_points(listed: Deployment) -> None:
    output = listed.backupctl("archives", "web1/notes", "--json", check=True).stdout
    rows = conforming("archives", output)["archives"]
    assert [r["name"] for r in rows] == listed.archives("web1")
    assert rows[0]["sha256"] and rows[0]["nbytes"] > 0 and rows[0]["pruned_at"] is None
    assert "ARCHIVE" in listed.backupctl("archives", "web1", check=True).stdout
    unknown = listed.backupctl("archives", "web1/nope")
    assert unknown.returncode == 2 and "unknown source 'nope'" in unknown.stderr


def test_runs_filters_history(listed: Deployment) -> None:
    def runs(*args: str) -> list[dict[str, object]]:
        output = listed.backupctl("runs", *args, "--json", check=True).stdout
        return conforming("runs", output)["runs"]  # type: ignore[no-any-return]

    assert {r["source"] for r in runs()} == {"notes", "gone"}
    (failed,) = runs("--status", "failed")
    assert failed["source"] == "gone" and failed["trigger"] == "manual"
    assert [r["source"] for r in runs("web1/notes", "--since", "1h")] == ["notes"]
    bad = listed.backupctl("runs", "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr and "Traceback" not in bad.stderr
