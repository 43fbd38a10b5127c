"""SQLite sources: a consistent online copy that finishes under continuous writes, and a
copy that makes no progress stopped early with the reason (issue 11, case 1)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backupd.local.procfs import processes_mentioning
from tests.e2e.conftest import Deployment
from tests.harness.droplet import Droplet

pytestmark = pytest.mark.e2e

# Stand-in for an sqlite3 older than 3.27 (Ubuntu 18.04 ships 3.22): it reports that version
# and refuses VACUUM INTO as the old parser does; everything else is the real sqlite3.
OLD_SQLITE3 = """#!/bin/sh
if [ "$1" = -version ]; then echo "3.22.0 2018-01-22 18:45:57 0c55d179733b46d8"; exit 0; fi
case "$*" in *"VACUUM INTO"*) echo 'Error: near "INTO": syntax error' >&2; exit 1;; esac
exec /usr/bin/sqlite3 "$@"
"""


def archive_facts(d: Deployment) -> dict[str, dict[str, object]]:
    rows = d.catalogue_rows("SELECT item, facts FROM archives")
    return {item: json.loads(facts) for item, facts in rows}  # type: ignore[arg-type]


def make_db(droplet: Droplet, name: str, journal: str) -> Path:
    path = droplet.root / "data" / name
    path.parent.mkdir(exist_ok=True)
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.executescript(
        f"PRAGMA journal_mode={journal};"
        "CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT);"
        'CREATE TABLE "odd ""name" (x);'
    )
    # ~4 MB: far more than the 100 pages the old .backup copies per step
    db.executemany(
        "INSERT INTO events (body) VALUES (?)", [(f"event {i}" * 20,) for i in range(20000)]
    )
    db.commit()
    db.close()
    if os.geteuid() == 0:  # the droplet's login must be able to take read locks
        subprocess.run(["chown", "-R", droplet.user, str(path.parent)], check=True)
    return path


class Writer:
    """Commits in a loop from another connection until stopped; counts its commits."""

    def __init__(self, path: Path) -> None:
        self.path, self.commits, self._stop = path, 0, threading.Event()
        self._thread = threading.Thread(target=self._write)

    def _write(self) -> None:
        db = sqlite3.connect(self.path, timeout=120)
        while not self._stop.is_set():
            db.execute("INSERT INTO events (body) VALUES ('written during the backup')")
            db.commit()
            self.commits += 1
        db.close()

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def no_leftovers(droplet: Droplet) -> Iterator[None]:
    """The droplet keeps no copy and no sqlite3 process of ours after a run, pass or fail."""
    tmp = droplet.root / "tmp"  # the droplet's TMPDIR
    before = set(tmp.glob("backupd-sqlite.*"))
    yield
    assert set(tmp.glob("backupd-sqlite.*")) - before == set()
    assert processes_mentioning(str(droplet.root / "data")) == []


def restored_db(d: Deployment, source: str, tmp_path: Path) -> sqlite3.Connection:
    out = tmp_path / f"restored-{source}"
    [line] = d.backupctl(
        "restore", f"web1/{source}", "--to", str(out), check=True
    ).stdout.splitlines()
    db = sqlite3.connect(Path(line.split()[0]))
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    return db


@pytest.mark.parametrize("journal", ["WAL", "DELETE"])
def test_online_copy_finishes_under_continuous_writes(
    deploy: Callable[..., Deployment],
    droplet: Droplet,
    tmp_path: Path,
    no_leftovers: None,
    journal: str,
) -> None:
    """WAL: writers carry on during VACUUM INTO. Rollback journal (another member of the
    kind): writers wait for the copy's read transaction, and the copy still finishes."""
    path = make_db(droplet, f"app-{journal}.db", journal)
    d = deploy({"app": {"kind": "sqlite", "path": str(path)}})
    with Writer(path) as writer:
        result = d.backupctl("backup", "now", "web1/app")
        during = writer.commits
    assert result.returncode == 0, result.stderr
    assert during > 0  # the writer really was committing while we copied
    facts = archive_facts(d)[path.name]
    assert facts["method"] == "vacuum-into"
    db = restored_db(d, "app", tmp_path)
    count = db.execute("SELECT count(*) FROM events").fetchone()[0]
    assert count >= 20000
    assert facts["rows"] == {"events": count, 'odd "name': 0}


def hold_exclusive_lock(path: Path) -> sqlite3.Connection:
    """A connection holding the database's exclusive lock (rollback journal): nobody else
    can read it until it ends, as with a crashed application's open transaction."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    db.execute("INSERT INTO events (body) VALUES ('uncommitted')")
    return db


def test_a_copy_that_cannot_progress_is_stopped_with_the_reason(
    deploy: Callable[..., Deployment], droplet: Droplet, no_leftovers: None
) -> None:
    path = make_db(droplet, "locked.db", "DELETE")
    d = deploy({"app": {"kind": "sqlite", "path": str(path), "stall_timeout": "3s"}})
    holder = hold_exclusive_lock(path)
    try:
        result = d.backupctl("backup", "now", "web1/app")
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 1
    [(status, error)] = d.catalogue_rows("SELECT status, error FROM runs")
    assert status == "failed"
    assert "sqlite3 vacuum-into made no progress for 3s: stopped" in error
    assert "another connection holds the database locked" in error
    assert "idle" not in error  # the watchdog stopped it, not the 10-minute idle timeout
    assert d.archives("web1") == []
    [(kind, message)] = d.catalogue_rows("SELECT kind, message FROM alert_events")
    assert kind == "backup_failed" and message == error


@pytest.fixture
def old_sqlite3(droplet: Droplet) -> Iterator[Path]:
    script = droplet.bin_dir / "sqlite3-3.22"
    script.write_text(OLD_SQLITE3)
    script.chmod(0o755)
    yield script
    script.unlink()


def test_old_sqlite3_falls_back_to_backup_and_says_why_when_it_stalls(
    deploy: Callable[..., Deployment],
    droplet: Droplet,
    old_sqlite3: Path,
    tmp_path: Path,
    no_leftovers: None,
) -> None:
    path = make_db(droplet, "old.db", "DELETE")
    d = deploy(
        {
            "app": {
                "kind": "sqlite",
                "path": str(path),
                "sqlite3": str(old_sqlite3),
            }
        }
    )
    # quiet database: the fallback works (with the default stall_timeout: a copy whose
    # file does not grow for 3 s is also a healthy one on a busy machine)
    d.backupctl("backup", "now", "web1/app", check=True)
    assert archive_facts(d)[path.name]["method"] == "backup"
    assert restored_db(d, "app", tmp_path).execute("SELECT count(*) FROM events").fetchone() == (
        20000,
    )
    # a database it cannot copy: stopped, and the message says what the fallback lacks
    line = f'sqlite3 = "{old_sqlite3}"\n'
    config = d.config.read_text()
    assert line in config
    d.config.write_text(config.replace(line, line + 'stall_timeout = "3s"\n'))
    holder = hold_exclusive_lock(path)
    try:
        assert d.backupctl("backup", "now", "web1/app").returncode == 1
    finally:
        holder.rollback()
        holder.close()
    [(error,)] = d.catalogue_rows("SELECT error FROM runs WHERE status = 'failed'")
    assert "sqlite3 backup made no progress for 3s: stopped" in error
    assert "sqlite3 3.22.0 has no VACUUM INTO (3.27 or newer)" in error


def test_sqlite_missing_file_is_a_clear_failure(deploy: Callable[..., Deployment]) -> None:
    d = deploy({"gone": {"kind": "sqlite", "path": "/nonexistent/app.db"}})
    assert d.backupctl("backup", "now", "web1/gone").returncode == 1
    [(error,)] = d.catalogue_rows("SELECT error FROM runs")
    assert error == "web1/gone: no such database file: /nonexistent/app.db (on the droplet)"
    assert d.archives("web1") == []
