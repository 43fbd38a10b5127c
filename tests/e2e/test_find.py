"""find and ls on a real droplet's tree (issue 16): three nights, a file changed on night 2
and one deleted on night 3; the index answers which nights held what, without Borg."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backupd.actions.context import Context
from backupd.actions.maintain import run_maintenance
from jobs.registry import load_config
from tests.e2e.conftest import Deployment
from tests.e2e.test_trees import build_tree, chown_to_droplet, snapshot
from tests.harness.droplet import Droplet

pytestmark = pytest.mark.e2e


@pytest.fixture
def uploads(droplet: Droplet) -> Iterator[Path]:
    root = build_tree(droplet)
    yield root
    subprocess.run(["rm", "-rf", str(root.parent)], check=True)


def as_json(d: Deployment, *args: str) -> Any:
    done = d.backupctl(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_find_and_ls_answer_from_the_index_night_by_night(
    deploy: Callable[..., Deployment], uploads: Path, droplet: Droplet, tmp_path: Path
) -> None:
    d = deploy({"uploads": {"kind": "directory", "path": str(uploads)}})
    changed, deleted = uploads / "d1" / "file-1.bin", uploads / "d2" / "file-9.bin"
    before = hashlib.sha256(changed.read_bytes()).hexdigest()
    d.backupctl("backup", "now", "web1/uploads", check=True)
    changed.write_bytes(b"night two")
    chown_to_droplet(droplet, changed)
    d.backupctl("backup", "now", "web1/uploads", check=True)
    deleted_size = deleted.stat().st_size
    was = snapshot(uploads)
    deleted.unlink()
    d.backupctl("backup", "now", "web1/uploads", check=True)
    nights = sorted(a["created_at"] for a in as_json(d, "archives", "web1/uploads")["archives"])

    [gone] = as_json(d, "find", "file-9.bin", "--deleted")["versions"]
    assert (gone["path"], gone["gone"], gone["archives"]) == ("d2/file-9.bin", True, 2)
    assert (gone["first_seen"], gone["last_seen"]) == (nights[0], nights[1])
    versions = as_json(d, "find", "d1/file-1.bin", "web1/uploads")["versions"]
    assert [v["sha256"] for v in versions] == [
        before,
        hashlib.sha256(b"night two").hexdigest(),
    ]
    assert [v["archives"] for v in versions] == [1, 2]
    odd = as_json(d, "find", "ünïcode")["versions"]
    assert [v["path"] for v in odd] == ['odd names/it\'s a "file" with $(spaces) and ünïcode;.txt']

    on_night_two = as_json(d, "ls", "web1/uploads", "d2", "--at", nights[1])
    assert "d2/file-9.bin" in [e["path"] for e in on_night_two["entries"]]
    newest = as_json(d, "ls", "web1/uploads", "d2")
    assert "d2/file-9.bin" not in [e["path"] for e in newest["entries"]]
    link = as_json(d, "ls", "web1/uploads", "link-to-d1")["entries"]
    assert [(e["type"], e["target"]) for e in link] == [("l", "d1")]
    [last] = as_json(d, "diff", "web1/uploads")["diffs"]  # night 3 against night 2
    assert last["files"]["removed"] == [
        {"path": "d2/file-9.bin", "type": "f", "size": deleted_size}
    ]
    assert (last["files"]["added"], last["files"]["changed"], last["tables"]) == ([], [], None)
    [first] = as_json(d, "diff", "web1/uploads", "--to", nights[1])["diffs"]
    assert [c["path"] for c in first["files"]["changed"]] == ["d1/file-1.bin"]
    assert first["files"]["changed"][0]["size_after"] == len(b"night two")
    said = d.backupctl("diff", "web1/uploads").stdout
    assert "- d2/file-9.bin" in said
    backwards = d.backupctl("diff", "web1/uploads", "--from", nights[2], "--to", nights[0])
    assert backwards.returncode == 2 and "--from is after --to" in backwards.stderr
    same = d.backupctl("diff", "web1/uploads", "--from", nights[1], "--to", nights[1])
    assert same.returncode == 2 and "pick the same backup" in same.stderr
    # that one file back, alone, from the last night that had it: bytes, mode, mtime, owner
    out = tmp_path / "one"
    restore = ("restore", "web1/uploads", "--at", gone["last_seen"])
    d.backupctl(*restore, "--to", str(out), "--include", "d2/file-9.bin", check=True)
    assert snapshot(out) == {k: v for k, v in was.items() if k in ("d2", "d2/file-9.bin")}
    sub = tmp_path / "sub"
    d.backupctl(*restore, "--to", str(sub), "--include", "d1/", "--include", "d0", check=True)
    assert snapshot(sub) == {k: v for k, v in was.items() if k.split("/")[0] in ("d0", "d1")}
    for bad, said, rc in (
        ("../etc", "without . or ..", 2),
        ("d9/none", "does not hold d9/none", 8),
    ):
        refused = d.backupctl(*restore, "--to", str(tmp_path / "x"), "--include", bad)
        assert refused.returncode == rc and said in refused.stderr, refused.stderr
        assert not (tmp_path / "x").exists()  # refused before anything is made
    # one inside another, and into a directory holding other files (--force): theirs stay
    again = ("--to", str(out), "--force", "--include", "d1", "--include", "./d1/file-1.bin")
    d.backupctl(*restore, *again, check=True)
    assert (out / "d2" / "file-9.bin").exists() and (out / "d1" / "file-1.bin").exists()
    # pushed back onto the droplet beside what is there: nothing else is touched
    landing = droplet.root / "srv" / "landing"
    (landing / "d2").mkdir(parents=True)
    (landing / "keep.txt").write_text("mine\n")
    chown_to_droplet(droplet, landing)
    push = ("--to-host", "web1", "--path", str(landing), "--force", "--yes")
    d.backupctl(*restore, *push, "--include", "d2/file-9.bin", check=True)
    assert (landing / "d2" / "file-9.bin").read_bytes() == was["d2/file-9.bin"][-1]
    assert (landing / "keep.txt").read_text() == "mine\n"
    shown = d.backupctl("find", "file-9", "web1")
    assert "d2/file-9.bin" in shown.stdout and "GONE" in shown.stdout
    missing = d.backupctl("ls", "web1/uploads", "no/such/dir")
    assert missing.returncode != 0 and "'no/such/dir' is not in" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert as_json(d, "alerts")["changes"] == []  # a night's ordinary churn is no loss


def test_a_wiped_tree_and_an_emptied_table_are_alerted_and_their_night_before_kept(
    deploy: Callable[..., Deployment], uploads: Path, droplet: Droplet
) -> None:
    """Decision 0024 on a real droplet: 60% of a tree deleted and a table emptied each
    raise a change alert; prune keeps the night before each until it is acknowledged."""
    db = droplet.root / "srv" / "changes" / "app.db"
    db.parent.mkdir(exist_ok=True)
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE leads (id INTEGER PRIMARY KEY, email TEXT)")
        c.executemany("INSERT INTO leads (email) VALUES (?)", [(f"{i}@x",) for i in range(500)])
    chown_to_droplet(droplet, db.parent)
    last_only = {"keep_last": 1, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}
    d = deploy(
        {
            "uploads": {"kind": "directory", "path": str(uploads), "retention": last_only},
            "app": {"kind": "sqlite", "path": str(db), "retention": last_only},
        }
    )
    for source in ("uploads", "app"):
        d.backupctl("backup", "now", f"web1/{source}", check=True)
    for i in range(300):
        if i % 5 < 3:
            (uploads / f"d{i % 7}" / f"file-{i}.bin").unlink()
    with sqlite3.connect(db) as c:
        c.execute("DELETE FROM leads")
    night = [d.backupctl("backup", "now", f"web1/{s}", check=True) for s in ("uploads", "app")]
    said = [done.stdout for done in night]
    assert "web1/uploads: change alert" in said[0] and "looks like loss: 59%" in said[0]
    seen = as_json(d, "alerts")
    changes = {c["source"]: c for c in seen["changes"]}
    assert set(changes) == {"uploads", "app"}
    assert "59% of its files gone (180 of 304; 124 files now)" in changes["uploads"]["what"]
    assert changes["app"]["what"] == "table leads lost 100% of its rows (500 -> 0)"
    assert sorted(a["kind"] for a in seen["alerts"]) == ["change_loss", "change_loss"]
    first = {s: changes[s]["held_archive"] for s in changes}
    shown = d.backupctl("alerts", check=True).stdout
    assert shown.startswith("Unacknowledged change alerts") and first["app"] in shown
    assert as_json(d, "status")["open_change_alerts"] == 2
    assert "web1/app: change alert" in d.backupctl("status", check=True).stdout

    ctx = Context(load_config(d.config))
    assert run_maintenance(ctx, "prune", "web1", "test").ok
    live = {a["name"] for a in as_json(d, "archives", "web1")["archives"]}
    assert set(first.values()) <= live and len(live) == 4  # each night before, and the last
    acked = d.backupctl("alerts", "ack", str(changes["uploads"]["id"]), check=True)
    assert f"prune may now remove {first['uploads']}" in acked.stdout
    assert run_maintenance(ctx, "prune", "web1", "test").ok
    live = {a["name"] for a in as_json(d, "archives", "web1")["archives"]}
    assert first["uploads"] not in live and first["app"] in live
    assert [c["source"] for c in as_json(d, "alerts")["changes"]] == ["app"]
    wrong = d.backupctl("alerts", "ack", "999")
    assert wrong.returncode == 8 and "no change alert 999" in wrong.stderr
