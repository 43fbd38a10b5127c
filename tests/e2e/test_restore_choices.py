"""backupctl restore: which point (--at, --archive), --dry-run, and the refusals."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.e2e.conftest import Deployment
from tests.harness.droplet import Droplet

pytestmark = pytest.mark.e2e


def rows_in(path: Path) -> int:
    with sqlite3.connect(path) as c:
        (n,) = c.execute("SELECT count(*) FROM t").fetchone()
    return int(n)


@pytest.fixture(scope="module")
def two_points(
    module_deploy: Callable[..., Deployment], droplet: Droplet
) -> tuple[Deployment, str]:
    """Two backups of one database (100 rows, then 250) and a time between them; the
    tests only restore from them."""
    db = droplet.root / "points" / "app.db"
    db.parent.mkdir(exist_ok=True)
    db.unlink(missing_ok=True)
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        c.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", droplet.user, str(db.parent)], check=True)
    d = module_deploy({"app": {"kind": "sqlite", "path": str(db)}})
    d.backupctl("backup", "now", "web1/app", check=True)
    time.sleep(1.1)
    between = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    time.sleep(1.1)
    with sqlite3.connect(db) as c:
        c.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100, 250)])
    d.backupctl("backup", "now", "web1/app", check=True)
    return d, between


def test_newest_by_default_and_at_a_point_in_time(
    two_points: tuple[Deployment, str], tmp_path: Path
) -> None:
    d, between = two_points
    d.backupctl("restore", "web1/app", "--to", str(tmp_path / "new"), check=True)
    (newest,) = (tmp_path / "new").iterdir()
    assert rows_in(newest) == 250
    d.backupctl("restore", "web1/app", "--to", str(tmp_path / "old"), "--at", between, check=True)
    (older,) = (tmp_path / "old").iterdir()
    assert rows_in(older) == 100


def test_dry_run_changes_nothing(two_points: tuple[Deployment, str], tmp_path: Path) -> None:
    d, _ = two_points
    target = tmp_path / "plan"
    result = d.backupctl("restore", "web1/app", "--to", str(target), "--dry-run", check=True)
    assert "would restore app." in result.stdout and "nothing was changed" in result.stdout
    assert not target.exists()


def test_refusals_are_clear_and_change_nothing(
    two_points: tuple[Deployment, str], tmp_path: Path
) -> None:
    d, _ = two_points
    target = tmp_path / "busy"
    d.backupctl("restore", "web1/app", "--to", str(target), check=True)
    (existing,) = target.iterdir()
    before = existing.read_bytes()
    for extra in ((), ("--dry-run",)):
        again = d.backupctl("restore", "web1/app", "--to", str(target), *extra)
        assert again.returncode == 9 and "refusing to overwrite" in again.stderr
    assert existing.read_bytes() == before

    early = d.backupctl("restore", "web1/app", "--to", str(tmp_path / "x"), "--at", "2020-01-01")
    assert early.returncode == 8
    assert (
        "no good backup at or before 2020-01-01T00:00:00+00:00 (the first is from" in early.stderr
    )
    unknown = d.backupctl("restore", "web1/app", "--to", str(tmp_path / "x"), "--archive", "nope")
    assert unknown.returncode == 8 and "no archive named 'nope'" in unknown.stderr
    bad_time = d.backupctl("restore", "web1/app", "--to", str(tmp_path / "x"), "--at", "soon")
    assert bad_time.returncode == 2 and "expected a time like" in bad_time.stderr
    both = d.backupctl(
        "restore",
        "web1/app",
        "--to",
        str(tmp_path / "x"),
        "--at",
        "2026-01-01",
        "--archive",
        "nope",
    )
    assert both.returncode == 2 and "not both" in both.stderr
    assert not (tmp_path / "x").exists()
    for r in (early, unknown, bad_time, both):
        assert "Traceback" not in r.stderr
