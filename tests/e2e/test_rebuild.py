"""Delete the catalogue, rebuild it from the repositories: the same archives, the same facts."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import Deployment
from tests.e2e.test_trees import tree  # noqa: F401  (fixture)
from tests.harness.droplet import Droplet

pytestmark = pytest.mark.e2e

COLUMNS = ("name, item, filename, created_at, nbytes, sha256, original_size, compressed_size,"
           " deduplicated_size, facts, run_id, repository")  # fmt: skip


def archive_rows(d: Deployment) -> list[tuple[object, ...]]:
    rows = d.catalogue_rows(f"SELECT {COLUMNS} FROM archives ORDER BY name")
    return [(*r[:9], json.loads(str(r[9])), *r[10:]) for r in rows]


def test_rebuild_gives_back_the_same_archives_and_facts(
    deploy: Callable[..., Deployment],
    droplet: Droplet,
    tree: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    db = droplet.root / "rebuild" / "app.db"
    db.parent.mkdir(exist_ok=True)
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
        c.executemany("INSERT INTO t (v) VALUES (?)", [(str(i),) for i in range(500)])
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", droplet.user, str(db.parent)], check=True)
    d = deploy({"app": {"kind": "sqlite", "path": str(db)},
                "uploads": {"kind": "directory", "path": str(tree)}})  # fmt: skip
    d.backupctl("backup", "now", "web1", check=True)
    (tree / "d1" / "new.txt").write_text("changed\n")
    d.backupctl("backup", "now", "web1", check=True)
    before = archive_rows(d)
    assert len(before) == 4

    for suffix in ("", "-wal", "-shm"):
        Path(f"{d.state_dir / 'catalogue.db'}{suffix}").unlink(missing_ok=True)
    result = d.backupctl("catalogue", "rebuild", check=True)
    assert "rebuilt 4 archive(s) in 4 run(s) from 1 repositories" in result.stdout
    assert archive_rows(d) == before

    again = d.backupctl("catalogue", "rebuild")
    assert again.returncode == 9 and "already lists 4 archive(s)" in again.stderr
    out = tmp_path / "restored"
    d.backupctl("restore", "web1/app", "--to", str(out), check=True)  # from the rebuilt rows
    (restored,) = out.iterdir()
    with sqlite3.connect(restored) as c:
        assert c.execute("SELECT count(*) FROM t").fetchone() == (500,)
