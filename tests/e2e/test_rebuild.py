"""Delete the catalogue, rebuild it from the repositories: the same archives, the same facts."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import Deployment, pg_source
from tests.e2e.test_trees import tree  # noqa: F401  (fixture)
from tests.harness.droplet import Droplet
from tests.harness.postgres import PostgresCluster

pytestmark = pytest.mark.e2e

COLUMNS = (
    "name, item, filename, created_at, nbytes, sha256, original_size, compressed_size,"
    " deduplicated_size, facts, run_id, repository"
)


def archive_rows(d: Deployment) -> list[tuple[object, ...]]:
    rows = d.catalogue_rows(f"SELECT {COLUMNS} FROM archives ORDER BY name")
    return [(*r[:9], json.loads(str(r[9])), *r[10:]) for r in rows]


def without_dedup(row: tuple[object, ...]) -> tuple[object, ...]:
    facts = dict(row[9])  # type: ignore[call-overload]
    facts["borg"] = {k: v for k, v in facts["borg"].items() if k != "deduplicated_size"}
    return (*row[:8], facts, *row[10:])


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
    d = deploy(
        {
            "app": {"kind": "sqlite", "path": str(db)},
            "uploads": {"kind": "directory", "path": str(tree)},
        }
    )
    d.backupctl("backup", "now", "web1", check=True)
    (tree / "d1" / "new.txt").write_text("changed\n")
    d.backupctl("backup", "now", "web1", check=True)
    before = archive_rows(d)
    assert len(before) == 4

    for suffix in ("", "-wal", "-shm"):
        Path(f"{d.state_dir / 'catalogue.db'}{suffix}").unlink(missing_ok=True)
    result = d.backupctl("catalogue", "rebuild", check=True)
    assert "rebuilt 4 archive(s) in 4 run(s) from 1 repositories" in result.stdout
    # the same rows, but a deduplicated size is borg's word at rebuild time (decision 0019):
    # what the archive alone holds now, at most what it added when it was made
    after = archive_rows(d)
    assert [without_dedup(r) for r in after] == [without_dedup(r) for r in before]
    for was, now in zip(before, after, strict=True):
        assert 0 < int(str(now[8])) <= int(str(was[8]))

    # the index of file versions, read back from the archived manifests, oldest first
    [new] = json.loads(d.backupctl("find", "d1/new.txt", "--json", check=True).stdout)["versions"]
    assert (new["archives"], new["gone"]) == (1, False)
    [kept] = json.loads(d.backupctl("find", "d1/file-1.bin", "--json", check=True).stdout)[
        "versions"
    ]
    assert kept["archives"] == 2  # one version, held by both nights
    again = d.backupctl("catalogue", "rebuild")
    assert again.returncode == 9 and "already lists 4 archive(s)" in again.stderr
    out = tmp_path / "restored"
    d.backupctl("restore", "web1/app", "--to", str(out), check=True)  # from the rebuilt rows
    (restored,) = out.iterdir()
    with sqlite3.connect(restored) as c:
        assert c.execute("SELECT count(*) FROM t").fetchone() == (500,)


def test_a_rebuilt_catalogue_does_not_invent_successes(
    deploy: Callable[..., Deployment], pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    """A night that archived two databases of three (the third's dump was refused), comes
    back failed; a restore --at inside that night restores the last complete set and says
    so."""
    names = ["rb_a", "rb_b", "rb_c"]
    for name in names:
        pg_cluster.psql(f"DROP DATABASE IF EXISTS {name}")
        pg_cluster.createdb(name)
        pg_cluster.psql(
            "CREATE TABLE t (v text); INSERT INTO t SELECT md5(g::text)"
            " FROM generate_series(1, 300) g",
            db=name,
        )
    d = deploy({"db": pg_source(pg_cluster, databases=names, globals=False, min_bytes="4KiB")})
    try:
        d.backupctl("backup", "now", "web1/db", check=True)
        pg_cluster.psql("DROP TABLE t", db="rb_b")  # the next night refuses its tiny dump
        assert d.backupctl("backup", "now", "web1/db").returncode == 1
    finally:
        for name in names:
            pg_cluster.psql(f"DROP DATABASE IF EXISTS {name}")
    partial = sorted(
        n
        for (n,) in d.catalogue_rows(
            "SELECT a.name FROM archives a JOIN runs r ON a.run_id = r.id WHERE r.status = 'failed'"
        )
    )
    assert len(partial) == 2 and partial[0].startswith("db.rb_a.")

    for suffix in ("", "-wal", "-shm"):
        Path(f"{d.state_dir / 'catalogue.db'}{suffix}").unlink(missing_ok=True)
    result = d.backupctl("catalogue", "rebuild", check=True)
    assert "1 run(s) did not archive their whole set: recorded as failed" in result.stdout
    runs = d.catalogue_rows("SELECT status, error FROM runs ORDER BY started_at")
    assert [status for status, _ in runs] == ["succeeded", "failed"]
    assert "incomplete: 2 of 3 planned item(s) archived; missing rb_b" in str(runs[1][1])
    [row] = [r for r in d.status() if r["source"] == "db"]
    assert row["last_status"] == "failed"

    [(bad_started,)] = d.catalogue_rows("SELECT started_at FROM runs WHERE status = 'failed'")
    inside = str(bad_started)  # in the failed night, as rebuilt (UTC, like the catalogue)
    out = tmp_path / "restored"
    restored = d.backupctl("restore", "web1/db", "--to", str(out), "--at", inside, check=True)
    assert sorted(p.name for p in out.iterdir()) == ["rb_a.pgdump", "rb_b.pgdump", "rb_c.pgdump"]
    assert "is incomplete (run " in restored.stderr
    assert "restoring the newest complete one instead" in restored.stderr

    # another member: naming an archive of the incomplete night restores it, with a warning
    named = d.backupctl(
        "restore", "web1/db", "--archive", partial[0], "--to", str(tmp_path / "one"), check=True
    )
    assert "is part of an incomplete backup" in named.stderr
