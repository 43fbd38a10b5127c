"""Paths the droplet's login user may not read (issue 11, case 5; decision 0015): what can
be read is archived, what cannot is named in one warning with how to grant access; a tree
of which nothing can be read fails. The tests run as root; the login user is not."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backupd.actions import names
from tests.e2e.conftest import Deployment
from tests.e2e.test_trees import OLD, chown_to_droplet, facts_of
from tests.harness.droplet import Droplet

pytestmark = pytest.mark.e2e


def snapshot(root: Path, leave_out: tuple[str, ...] = ()) -> dict[bytes, tuple[object, ...]]:
    """Per relative name (bytes): type, mode, owner, mtime, content (a FIFO's none)."""
    base = os.fsencode(root)
    skip = tuple(os.fsencode(p) for p in leave_out)
    found: dict[bytes, tuple[object, ...]] = {}
    for top, dirs, files in os.walk(base):
        for name in sorted(dirs + files):
            path = os.path.join(top, name)
            rel = os.path.relpath(path, base)
            if rel in skip or rel.startswith(tuple(s + b"/" for s in skip)):
                continue
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            common = (kind, st.st_mode, st.st_uid, st.st_gid)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    found[rel] = (*common, int(st.st_mtime), f.read())
            else:
                found[rel] = (*common, os.readlink(path) if stat.S_ISLNK(st.st_mode) else None)
    return found


def lock(path: Path, mode: int) -> None:
    """Root's only (the login user may not read it), mtime kept."""
    st = path.stat()
    os.chown(path, 0, 0)
    path.chmod(mode)
    os.utime(path, (st.st_atime, st.st_mtime))


@pytest.fixture
def tree(droplet: Droplet) -> Iterator[Path]:
    assert os.geteuid() == 0, "these tests make root-only files: run them as root"
    root = droplet.root / "srv" / "shared"
    subprocess.run(["rm", "-rf", str(root)], check=True)
    (root / "docs").mkdir(parents=True)
    (root / "old").mkdir()
    (root / "a.txt").write_text("alpha\n")
    (root / "notes.txt").write_text("notes, readable yesterday\n")
    (root / "gone.txt").write_text("deleted before the second run\n")
    (root / "docs" / "b.txt").write_text("beta\n" * 100)
    (root / "old" / "kept.txt").write_text("in old/\n")
    chown_to_droplet(droplet, root.parent)
    for path in [root, *root.rglob("*")]:
        os.utime(path, (OLD, OLD))
    yield root
    subprocess.run(["rm", "-rf", str(root.parent)], check=True)


def runs_and_alerts(d: Deployment) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    runs = d.catalogue_rows("SELECT status, error FROM runs ORDER BY id")
    alerts = d.catalogue_rows("SELECT kind, message FROM alert_events ORDER BY id")
    return runs, alerts


def test_unreadable_paths_are_left_out_and_named_in_one_warning(
    deploy: Callable[..., Deployment], tree: Path, droplet: Droplet, tmp_path: Path
) -> None:
    (tree / "secret.key").write_text("root's\n")
    lock(tree / "secret.key", 0o600)
    (tree / "private").mkdir()
    (tree / "private" / "inner.txt").write_text("root's too\n")
    lock(tree / "private", 0o700)
    d = deploy({"shared": {"kind": "directory", "path": str(tree)}})
    result = d.backupctl("backup", "now", "web1/shared")
    assert result.returncode == 0, result.stderr
    runs, alerts = runs_and_alerts(d)
    [(status, error)] = runs
    [(kind, message)] = alerts
    assert status == "warning" and kind == "backup_warning" and message == error
    assert isinstance(message, str)
    # the operator at the terminal hears it too, not just "ok"
    assert result.stdout.startswith("web1/shared: warning, 1 archive(s)")
    assert result.stderr.strip() == f"warning: {message}"
    assert "2 path(s)" in message and "private/, secret.key" in message
    assert f"could not be read by {droplet.user}" in message
    assert "sudo = true" in message and "docs/droplet-setup.md" in message
    facts = facts_of(d)
    assert facts["unreadable"] == ["private/", "secret.key"] and facts["unreadable_count"] == 2
    assert facts["files"] == 5

    out = tmp_path / "restored"
    d.backupctl("restore", "web1/shared", "--to", str(out), check=True)
    assert snapshot(out) == snapshot(tree, leave_out=("secret.key", "private"))


def test_readable_yesterday_unreadable_today_is_not_in_todays_archive(
    deploy: Callable[..., Deployment], tree: Path, tmp_path: Path
) -> None:
    d = deploy({"shared": {"kind": "directory", "path": str(tree)}})
    d.backupctl("backup", "now", "web1/shared", check=True)
    runs, alerts = runs_and_alerts(d)
    assert runs == [("succeeded", None)] and alerts == []  # a readable tree: silent
    assert facts_of(d)["unreadable"] == [] and facts_of(d)["unreadable_count"] == 0
    yesterday = d.archives("web1")[0]

    # a chmod/chown alone: size and mtime unchanged, so rsync would not even open it
    lock(tree / "notes.txt", 0o600)
    lock(tree / "old", 0o700)
    (tree / "gone.txt").unlink()  # deleted on the droplet: out of the mirror even so
    result = d.backupctl("backup", "now", "web1/shared")
    assert result.returncode == 0, result.stderr
    runs, alerts = runs_and_alerts(d)
    assert [r[0] for r in runs] == ["succeeded", "warning"]
    [(kind, message)] = alerts
    assert kind == "backup_warning" and "2 path(s)" in str(message)
    assert "notes.txt" in str(message) and "old/" in str(message)
    assert facts_of(d)["unreadable"] == ["notes.txt", "old/"]

    today = tmp_path / "today"
    d.backupctl("restore", "web1/shared", "--to", str(today), check=True)  # checked file by file
    assert sorted(p.name for p in today.iterdir()) == ["a.txt", "docs"]
    assert snapshot(today) == snapshot(tree, leave_out=("notes.txt", "old"))
    before = tmp_path / "yesterday"
    d.backupctl("restore", "web1/shared", "--archive", yesterday, "--to", str(before), check=True)
    assert (before / "notes.txt").read_text() == "notes, readable yesterday\n"
    assert (before / "old" / "kept.txt").exists() and (before / "gone.txt").exists()


@pytest.mark.parametrize("what", ["root", "every file"])
def test_a_tree_nothing_of_which_can_be_read_fails(
    deploy: Callable[..., Deployment], tree: Path, what: str
) -> None:
    if what == "root":
        lock(tree, 0o700)
    else:
        for path in tree.rglob("*"):
            if path.is_file():
                lock(path, 0o600)
    d = deploy({"shared": {"kind": "directory", "path": str(tree)}})
    result = d.backupctl("backup", "now", "web1/shared")
    assert result.returncode == 1
    runs, alerts = runs_and_alerts(d)
    [(status, error)] = runs
    [(kind, message)] = alerts
    assert status == "failed" and kind == "backup_failed" and message == error
    assert f"could not read {tree}" in str(error) and "nothing was archived" in str(error)
    assert "sudo = true" in str(error)
    assert d.archives("web1") == []


def test_other_kinds_of_unreadable_and_a_fifo(
    deploy: Callable[..., Deployment], tree: Path, tmp_path: Path
) -> None:
    """A directory that may be listed but not entered (r without x), a root-only file
    whose name is not UTF-8 (named in the message by its display form, in the facts by its
    JSON form), and a FIFO (rsync copies it as a FIFO, never reads it: no warning)."""
    nox = tree / "listed-only"
    nox.mkdir()
    (nox / "inside.txt").write_text("cannot stat me\n")
    lock(nox, 0o744)
    odd = os.fsencode(tree) + b"/caf\xe9.key"
    with open(odd, "wb") as f:
        f.write(b"root's\n")
    os.chown(odd, 0, 0)
    os.chmod(odd, 0o600)
    os.mkfifo(tree / "pipe")
    chown_to_droplet_only(tree / "pipe")
    d = deploy({"shared": {"kind": "directory", "path": str(tree)}})
    result = d.backupctl("backup", "now", "web1/shared")
    assert result.returncode == 0, result.stderr
    [(status, error)], [(kind, message)] = runs_and_alerts(d)
    assert status == "warning" and kind == "backup_warning" and message == error
    assert "caf\\xe9.key, listed-only/" in str(message)
    facts = facts_of(d)
    assert facts["unreadable"] == [{"b64": "Y2Fm6S5rZXk="}, "listed-only/"]
    assert [names.from_json(n) for n in facts["unreadable"]] == [b"caf\xe9.key", b"listed-only/"]  # type: ignore[attr-defined]
    out = tmp_path / "restored"
    d.backupctl("restore", "web1/shared", "--to", str(out), check=True)
    assert stat.S_ISFIFO((out / "pipe").lstat().st_mode)
    assert snapshot(out) == snapshot(tree, leave_out=("caf\udce9.key", "listed-only"))
    drill = d.backupctl("drill", "web1/shared", "--json")
    [verdict] = json.loads(drill.stdout)["drills"]
    assert drill.returncode == 0 and verdict["verdict"] == "warn"  # restores; incomplete
    assert verdict["detail"] == (
        "2 path(s) could not be read at backup time and are not in this archive"
    )


def chown_to_droplet_only(path: Path) -> None:
    subprocess.run(["chown", "-h", "--reference", str(path.parent), str(path)], check=True)
