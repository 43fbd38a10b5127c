"""File names are bytes end to end (issue 11, case 3): a tree whose names are not UTF-8, hold
newlines or backslashes, start with a dash or look like the escape forms themselves, and
symlinks whose targets are not UTF-8, back up, restore (``--to``, ``--to-host --path``) and
drill byte for byte, on a SQLite and on a PostgreSQL catalogue."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from backupd.actions import names
from tests.e2e.conftest import Deployment, run_tool
from tests.e2e.test_trees import OLD, chown_to_droplet, facts_of
from tests.harness.droplet import Droplet
from tests.harness.fleet import HostSpec, write_fleet_config, write_passphrase
from tests.harness.postgres import PostgresCluster

pytestmark = pytest.mark.e2e
NAMES = [
    b"caf\xe9.txt",  # Latin-1: the name that used to fail the whole run
    b"caf\\xe9.txt",  # looks like the display form of the one above
    b'{"b64": "Y2Fm6S50eHQ="}',  # looks like the JSON form of the first
    b"new\nline.txt",
    b"back\\slash",
    b"-rf",
    b"--delete",
    "ünïcode ✓".encode(),
    b"\xff\xfe",
]
INNER = b"sub\xe9/inner\n\xfe"


def bsnapshot(root: Path) -> dict[bytes, tuple[object, ...]]:
    """Everything a faithful restore keeps, per relative name as bytes."""
    base = os.fsencode(root)
    found: dict[bytes, tuple[object, ...]] = {}
    for top, dirs, files in os.walk(base):
        for name in dirs + files:
            path = os.path.join(top, name)
            rel = os.path.relpath(path, base)
            st = os.lstat(path)
            if os.path.islink(path):
                found[rel] = ("l", os.readlink(path))
            elif os.path.isdir(path):
                found[rel] = ("d", st.st_mode, st.st_uid, st.st_gid)
            else:
                with open(path, "rb") as f:
                    found[rel] = ("f", st.st_mode, st.st_uid, st.st_gid, int(st.st_mtime), f.read())
    return found


@pytest.fixture
def odd_tree(droplet: Droplet) -> Iterator[Path]:
    root = droplet.root / "srv" / "odd"
    subprocess.run(["rm", "-rf", str(root)], check=True)
    base = os.fsencode(root)
    os.makedirs(os.path.join(base, b"sub\xe9"))
    for i, name in enumerate([*NAMES, INNER]):
        with open(os.path.join(base, name), "wb") as f:
            f.write(b"file %d\n" % i)
    os.symlink(b"caf\xe9.txt", os.path.join(base, b"link\xe9"))
    os.symlink(b"../nowhere/\xfe", os.path.join(base, b"dangling"))
    chown_to_droplet(droplet, root)
    for top, dirs, files in os.walk(base):
        for name in dirs + files:
            os.utime(os.path.join(top, name), (OLD, OLD), follow_symlinks=False)
    yield root
    subprocess.run(["rm", "-rf", str(root.parent)], check=True)


@contextmanager
def pushed_back(d: Deployment, droplet: Droplet, source: str) -> Iterator[Path]:
    """``restore SOURCE --to-host web1 --path`` into a new directory on the droplet (the
    login user's), removed afterwards."""
    dest = droplet.root / "pushed-back"
    subprocess.run(["rm", "-rf", str(dest)], check=True)
    dest.mkdir()
    chown_to_droplet(droplet, dest)
    try:
        d.backupctl(
            "restore",
            source,
            "--to-host",
            "web1",
            "--path",
            str(dest / "tree"),
            "--yes",
            check=True,
        )
        yield dest / "tree"
    finally:
        subprocess.run(["rm", "-rf", str(dest)], check=True)


def sample_names(facts: dict[str, object]) -> list[bytes]:
    sample = facts["sample"]
    assert isinstance(sample, list)
    return [names.from_json(name) for name, _sha in sample]


def test_odd_names_back_up_restore_and_drill_byte_for_byte(
    deploy: Callable[..., Deployment], odd_tree: Path, droplet: Droplet, tmp_path: Path
) -> None:
    d = deploy({"odd": {"kind": "directory", "path": str(odd_tree)}})
    result = d.backupctl("backup", "now", "web1/odd")
    assert result.returncode == 0, result.stderr
    assert d.catalogue_rows("SELECT status, error FROM runs") == [("succeeded", None)]
    facts = facts_of(d)
    assert (facts["files"], facts["symlinks"], facts["dirs"]) == (len(NAMES) + 1, 2, 1)
    assert sorted(sample_names(facts)) == sorted([*NAMES, INNER])
    assert [{"b64": base64.b64encode(b"caf\xe9.txt").decode()}] == [
        n
        for n, _ in facts["sample"]
        if n == names.to_json(b"caf\xe9.txt")  # type: ignore[attr-defined]
    ]

    out = tmp_path / "restored"
    d.backupctl("restore", "web1/odd", "--to", str(out), check=True)
    assert bsnapshot(out) == bsnapshot(odd_tree)

    with pushed_back(d, droplet, "web1/odd") as back:
        assert bsnapshot(back) == bsnapshot(odd_tree)

    drill = d.backupctl("drill", "web1/odd", "--json")
    assert drill.returncode == 0, drill.stdout + drill.stderr
    [verdict] = json.loads(drill.stdout)["drills"]
    assert verdict["verdict"] == "pass"
    assert verdict["checks"][0]["detail"].startswith(f"{len(NAMES) + 1} file(s)")


@pytest.fixture
def pg_catalogue(pg_cluster: PostgresCluster) -> Iterator[str]:
    db = "backupd_names"
    pg_cluster.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    pg_cluster.createdb(db)
    yield (
        f"postgresql+psycopg://{pg_cluster.superuser}@/{db}"
        f"?host={pg_cluster.socket_dir}&port={pg_cluster.port}"
    )
    pg_cluster.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def test_odd_names_on_a_postgresql_catalogue(
    pg_catalogue: str,
    pg_cluster: PostgresCluster,
    odd_tree: Path,
    droplet: Droplet,
    tmp_path: Path,
) -> None:
    """PostgreSQL's JSON refuses lone surrogates: the facts must hold the names in their
    JSON form, and a restore reads them back from there."""
    root = tmp_path / "backupd"
    root.mkdir()
    config = write_fleet_config(
        root / "backupd.toml",
        state_dir=root / "state",
        store=root / "store",
        passphrase_file=write_passphrase(root / "passphrase"),
        hosts=[HostSpec("web1", droplet, {"odd": {"kind": "directory", "path": str(odd_tree)}})],
        extra=f'[catalogue]\nurl = "{pg_catalogue}"',
    )
    backup = run_tool("backupctl", "--config", str(config), "backup", "now", "web1/odd")
    assert backup.returncode == 0, backup.stderr
    status = pg_cluster.psql("SELECT status FROM runs", db="backupd_names")
    assert status == "succeeded"
    stored = json.loads(pg_cluster.psql("SELECT facts FROM archives", db="backupd_names"))
    assert sorted(sample_names(stored)) == sorted([*NAMES, INNER])
    out = tmp_path / "restored"
    run_tool(
        "backupctl", "--config", str(config), "restore", "web1/odd", "--to", str(out), check=True
    )
    assert bsnapshot(out) == bsnapshot(odd_tree)
