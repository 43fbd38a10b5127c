"""Directories and Docker volumes: exact restores, incremental pulls, hooks, crash recovery."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backupd.actions import names
from backupd.actions.manifest import build_manifest
from tests.e2e.conftest import BIN, Deployment
from tests.harness.droplet import Droplet
from tests.harness.procs import wait_until

pytestmark = pytest.mark.e2e
OLD = 1_600_000_000  # a fixed past mtime, so a restore that loses mtimes shows


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a faithful restore must keep, per relative path."""
    found: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = ("l", os.readlink(path))
        elif path.is_dir():
            found[rel] = ("d", st.st_mode, st.st_uid, st.st_gid)
        else:
            found[rel] = (
                "f",
                st.st_mode,
                st.st_uid,
                st.st_gid,
                int(st.st_mtime),
                path.read_bytes(),
            )
    return found


def chown_to_droplet(droplet: Droplet, path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "-h", f"{droplet.user}:", str(path)], check=True)


@pytest.fixture
def tree(droplet: Droplet) -> Iterator[Path]:
    root = build_tree(droplet)
    yield root
    subprocess.run(["rm", "-rf", str(root.parent)], check=True)


def build_tree(droplet: Droplet) -> Path:
    """~300 files of the droplet's login under its ``srv/uploads``: odd names, a private
    file, an empty directory, a symlink, temporary files to exclude."""
    root = droplet.root / "srv" / "uploads"
    subprocess.run(["rm", "-rf", str(root)], check=True)
    rng = random.Random(7)
    for i in range(300):
        path = root / f"d{i % 7}" / f"file-{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(0, 40_000)))
    odd = root / "odd names" / 'it\'s a "file" with $(spaces) and ünïcode;.txt'
    odd.parent.mkdir(parents=True)
    odd.write_text("odd\n")
    (root / "private.key").write_text("secret\n")
    (root / "private.key").chmod(0o600)
    (root / "empty dir").mkdir()
    (root / "link-to-d1").symlink_to("d1")
    (root / "cache").mkdir()
    (root / "cache" / "big.tmp").write_bytes(b"x" * 10_000)
    (root / "d0" / "scratch.tmp").write_text("tmp")
    chown_to_droplet(droplet, root.parent)
    for path in root.rglob("*"):
        if not path.is_symlink():
            os.utime(path, (OLD, OLD))
    return root


def facts_of(d: Deployment) -> dict[str, object]:
    sql = "SELECT facts FROM archives ORDER BY id DESC LIMIT 1"
    [(facts,)] = d.catalogue_rows(sql)
    return json.loads(facts)  # type: ignore[arg-type, no-any-return]


def test_directory_restores_identically_and_the_second_pull_is_incremental(
    deploy: Callable[..., Deployment], tree: Path, droplet: Droplet, tmp_path: Path
) -> None:
    d = deploy({"uploads": {"kind": "directory", "path": str(tree)}})
    first = d.backupctl("backup", "now", "web1/uploads")
    assert first.returncode == 0, first.stderr
    f1 = facts_of(d)
    assert f1["files"] == 304 and f1["symlinks"] == 1
    assert f1["transferred_bytes"] > f1["bytes"]  # everything crossed once (plus overhead)

    out = tmp_path / "restored"
    d.backupctl("restore", "web1/uploads", "--to", str(out), check=True)
    assert snapshot(out) == snapshot(tree)

    # change 3 of 300 files, add one, delete one
    for i in (3, 150, 299):
        path = tree / f"d{i % 7}" / f"file-{i}.bin"
        path.write_bytes(path.read_bytes() + b"changed")
    (tree / "d1" / "new.bin").write_bytes(b"new" * 1000)
    (tree / "d2" / "file-2.bin").unlink()
    chown_to_droplet(droplet, tree)
    second = d.backupctl("backup", "now", "web1/uploads")
    assert second.returncode == 0, second.stderr
    f2 = facts_of(d)
    assert f2["files"] == 304
    assert f2["transferred_bytes"] < 0.2 * f1["transferred_bytes"]  # type: ignore[operator]
    assert f2["hashed_bytes"] < 0.2 * f1["hashed_bytes"]  # type: ignore[operator]
    borg2 = f2["borg"]
    assert isinstance(borg2, dict) and borg2["deduplicated_size"] < 200_000

    again = tmp_path / "restored-2"
    d.backupctl("restore", "web1/uploads", "--to", str(again), check=True)
    assert snapshot(again) == snapshot(tree)
    assert not (again / "d2" / "file-2.bin").exists()


def test_an_archive_from_before_the_manifest_pieces_still_restores_verified(
    deploy: Callable[..., Deployment], tree: Path, tmp_path: Path
) -> None:
    """Archives made before decision 0021 hold one manifest.jsonl: restore reads it, checks
    its plain sha256 against the catalogue and every file against it; a wrong one refuses."""
    d = deploy({"uploads": {"kind": "directory", "path": str(tree)}})
    d.backupctl("backup", "now", "web1/uploads", check=True)
    [mirror] = (d.state_dir / "mirrors" / "web1" / "uploads").iterdir()
    assert not (mirror / "manifest").exists()  # the pieces leave the mirror once archived
    entries = build_manifest(mirror / "data", tmp_path / "cache.json").entries
    legacy = b"".join(
        json.dumps(
            [k, names.to_json(n), *rest[:-1], names.to_json(rest[-1]) if k == "l" else rest[-1]]
        ).encode()
        + b"\n"
        for k, n, *rest in entries
    )
    (mirror / "manifest.jsonl").write_bytes(legacy)
    [(name,)] = d.catalogue_rows("SELECT name FROM archives")
    old = f"{name}-legacy"
    d.borg("create", f"{d.store / 'web1'}::{old}", "data", "manifest.jsonl", cwd=mirror)
    (mirror / "manifest.jsonl").unlink()
    with sqlite3.connect(d.state_dir / "catalogue.db") as db:
        db.execute(
            "UPDATE archives SET name = ?, sha256 = ?",
            (old, hashlib.sha256(legacy).hexdigest()),
        )
    out = tmp_path / "restored"
    d.backupctl("restore", "web1/uploads", "--to", str(out), check=True)
    assert snapshot(out) == snapshot(tree)

    with sqlite3.connect(d.state_dir / "catalogue.db") as db:
        db.execute("UPDATE archives SET sha256 = ?", ("0" * 64,))
    refused = d.backupctl("restore", "web1/uploads", "--to", str(tmp_path / "again"))
    assert refused.returncode != 0
    assert "the archived manifest does not match the catalogue" in refused.stderr


def test_excludes_and_a_refused_restore_into_a_non_empty_directory(
    deploy: Callable[..., Deployment], tree: Path, tmp_path: Path
) -> None:
    d = deploy(
        {"uploads": {"kind": "directory", "path": str(tree), "excludes": ["*.tmp", "/cache/"]}}
    )
    d.backupctl("backup", "now", "web1/uploads", check=True)
    out = tmp_path / "restored"
    d.backupctl("restore", "web1/uploads", "--to", str(out), check=True)
    assert not (out / "cache").exists() and not (out / "d0" / "scratch.tmp").exists()
    assert (out / "d0" / "file-0.bin").exists()
    refused = d.backupctl("restore", "web1/uploads", "--to", str(out))
    assert refused.returncode == 9 and "is not empty" in refused.stderr


HOOK = """#!/bin/sh
echo "$(basename "$0") $*" >> "$(dirname "$0")/hooks.log"
n=0  # "slow": hang (as a stuck snapshot would) until the test removes the flag, at most 30 s
while [ -f "$(dirname "$0")/slow" ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
exit 0
"""


@pytest.fixture
def hooks(droplet: Droplet) -> Iterator[Path]:
    for name in ("snapshot-take", "snapshot-drop"):
        script = droplet.bin_dir / name
        script.write_text(HOOK)
        script.chmod(0o755)
    log = droplet.bin_dir / "hooks.log"
    log.write_text("")
    log.chmod(0o666)
    yield log
    for name in ("snapshot-take", "snapshot-drop", "hooks.log", "slow"):
        (droplet.bin_dir / name).unlink(missing_ok=True)


def test_after_runs_even_when_the_pull_fails(
    deploy: Callable[..., Deployment], hooks: Path
) -> None:
    d = deploy(
        {
            "gone": {
                "kind": "directory",
                "path": "/nonexistent/tree",
                "before": ["snapshot-take", "vg0/data"],
                "after": ["snapshot-drop", "vg0/data"],
            }
        }
    )
    result = d.backupctl("backup", "now", "web1/gone")
    assert result.returncode == 1
    assert hooks.read_text() == "snapshot-take vg0/data\nsnapshot-drop vg0/data\n"
    [(status, error)] = d.catalogue_rows("SELECT status, error FROM runs")
    assert status == "failed" and "rsync of /nonexistent/tree exited with status 23" in error
    assert "No such file or directory" in error
    assert d.archives("web1") == []
    assert d.catalogue_rows("SELECT count(*) FROM pending_cleanups") == [(0,)]


def test_a_crash_between_before_and_after_is_cleaned_up_at_the_next_start(
    deploy: Callable[..., Deployment], tree: Path, hooks: Path, droplet: Droplet
) -> None:
    d = deploy(
        {
            "uploads": {
                "kind": "directory",
                "path": str(tree),
                "before": ["snapshot-take", "vg0/data"],
                "after": ["snapshot-drop", "vg0/data"],
            }
        }
    )
    (droplet.bin_dir / "slow").write_text("")
    proc = subprocess.Popen(
        [str(BIN / "backupctl"), "--config", str(d.config), "backup", "now", "web1/uploads"]
    )
    wait_until(lambda: "snapshot-take" in hooks.read_text(), 120, "the before hook to run")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (droplet.bin_dir / "slow").unlink()
    assert d.catalogue_rows("SELECT count(*) FROM pending_cleanups") == [(1,)]

    result = d.backupd("--once")
    assert result.returncode == 0, result.stderr
    assert hooks.read_text().splitlines() == [
        "snapshot-take vg0/data",  # the run that crashed
        "snapshot-drop vg0/data",  # owed, run at the next start
        "snapshot-take vg0/data",  # the next run
        "snapshot-drop vg0/data",
    ]
    assert d.catalogue_rows("SELECT count(*) FROM pending_cleanups") == [(0,)]
    statuses = d.catalogue_rows("SELECT status FROM runs ORDER BY id")
    assert statuses == [("interrupted",), ("succeeded",)]
    kinds = [k for (k,) in d.catalogue_rows("SELECT kind FROM alert_events")]
    assert "run_interrupted" in kinds


def test_a_backup_beside_a_running_one_leaves_its_owed_cleanup_to_it(
    deploy: Callable[..., Deployment], tree: Path, hooks: Path, droplet: Droplet
) -> None:
    """`backup now` settles owed cleanups first: one owed by a backup still running (its
    snapshot in use) is that backup's, run once by it, never by the neighbour."""
    tiny = droplet.root / "srv" / "tiny"
    tiny.mkdir(parents=True, exist_ok=True)
    (tiny / "one.txt").write_text("one\n")
    chown_to_droplet(droplet, tiny)
    d = deploy(
        {
            "uploads": {
                "kind": "directory",
                "path": str(tree),
                "before": ["snapshot-take", "vg0/data"],
                "after": ["snapshot-drop", "vg0/data"],
            },
            "tiny": {"kind": "directory", "path": str(tiny)},
        }
    )
    # the take hangs until the test lets it go (5 minutes at most, not the fixture's 30 s)
    (droplet.bin_dir / "snapshot-take").write_text(HOOK.replace("-lt 300", "-lt 3000"))
    (droplet.bin_dir / "slow").write_text("")
    running = subprocess.Popen(
        [str(BIN / "backupctl"), "--config", str(d.config), "backup", "now", "web1/uploads"]
    )
    try:
        wait_until(lambda: "snapshot-take" in hooks.read_text(), 120, "the before hook to run")
        [(owner,)] = d.catalogue_rows("SELECT claimed_by FROM pending_cleanups")
        assert f":{running.pid}:" in str(owner)
        d.backupctl("backup", "now", "web1/tiny", check=True)
        assert hooks.read_text() == "snapshot-take vg0/data\n"  # its snapshot left alone
        (droplet.bin_dir / "slow").unlink()
        assert running.wait(timeout=300) == 0
    finally:
        running.kill()
        running.wait()
    assert hooks.read_text() == "snapshot-take vg0/data\nsnapshot-drop vg0/data\n"
    assert d.catalogue_rows("SELECT count(*) FROM pending_cleanups") == [(0,)]


DOCKER = """#!/bin/sh
# Stand-in for the Docker CLI: only `docker volume inspect --format {{ .Mountpoint }} -- NAME`.
if [ "$1 $2 $3 $4 $5" = "volume inspect --format {{ .Mountpoint }} --" ]; then
  case "$6" in
    uploads_data) echo "%s"; exit 0 ;;
    *) echo "Error response from daemon: get $6: no such volume" >&2; exit 1 ;;
  esac
fi
echo "stand-in docker: unexpected arguments: $*" >&2
exit 125
"""


def test_a_docker_volume_is_found_and_pulled(
    deploy: Callable[..., Deployment], tree: Path, droplet: Droplet, tmp_path: Path
) -> None:
    script = droplet.bin_dir / "docker"
    script.write_text(DOCKER % tree)
    script.chmod(0o755)
    try:
        d = deploy(
            {
                "data": {"kind": "volume", "volume": "uploads_data"},
                "missing": {"kind": "volume", "volume": "nope"},
            }
        )
        d.backupctl("backup", "now", "web1/data", check=True)
        out = tmp_path / "restored"
        d.backupctl("restore", "web1/data", "--to", str(out), check=True)
        assert snapshot(out) == snapshot(tree)
        assert d.backupctl("backup", "now", "web1/missing").returncode == 1
        [(error,)] = d.catalogue_rows("SELECT error FROM runs WHERE status = 'failed'")
        assert "no such volume" in error
    finally:
        script.unlink()
