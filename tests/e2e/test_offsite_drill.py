"""The monthly drill of the off-site copy (issue 18) against a real S3 server: the copy's
newest complete state fetched, opened by a Borg of its own, each source's newest restore
point in it restored and checked; nothing of the local drills' verdicts changes; a good
drill raises no alert, a copy that does not restore raises one; status, `offsite status`
and the metrics show when each host's copy was last copied and last proved restorable."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Deployment, pg_source, small_sqlite
from tests.e2e.test_offsite import with_offsite
from tests.harness.droplet import Droplet
from tests.harness.postgres import PostgresCluster
from tests.harness.s3 import S3Server, s3_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Server]:
    with s3_server(tmp_path) as server:
        yield server


def files_on(droplet: Droplet) -> Path:
    """A small directory tree on the droplet, owned by its login."""
    root = droplet.root / "offsite-drill-files"
    (root / "docs").mkdir(parents=True, exist_ok=True)
    (root / "docs" / "a.txt").write_text("alpha\n" * 100)
    (root / "b.bin").write_bytes(os.urandom(70_000))
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", f"{droplet.user}:", str(root)], check=True)
    return root


def alerts(d: Deployment) -> list[tuple[object, ...]]:
    return d.catalogue_rows("SELECT kind, message FROM alert_events ORDER BY id")


def test_a_drill_of_the_copy_restores_each_source_and_leaves_the_local_verdicts_alone(
    deploy: Callable[..., Deployment], droplet: Droplet, s3: S3Server, tmp_path: Path
) -> None:
    db = small_sqlite(droplet, "offsite-drill")
    d = deploy(
        {
            "app": {"kind": "sqlite", "path": str(db)},
            "files": {"kind": "directory", "path": str(files_on(droplet))},
        }
    )
    d.backupctl("backup", "now", "web1", check=True)
    with_offsite(d, s3, tmp_path)
    d.backupctl("offsite", "run", "web1", check=True)
    d.backupctl("backup", "now", "web1/app", check=True)  # newer than the copy: not in it

    drilled = d.backupctl("offsite", "drill", "web1")
    assert drilled.returncode == 0, drilled.stderr
    said = drilled.stdout
    assert said.startswith("web1: eu: the copy of ") and " restored and checked: " in said, said
    assert "app (1 archive)" in said and "files (" in said
    assert alerts(d) == []  # a good drill of the copy is silent
    # the local drills' verdicts are the local drills': none ran, none is claimed
    assert d.catalogue_rows("SELECT count(*) FROM drills") == [(0,)]
    assert d.catalogue_rows("SELECT count(*) FROM archives WHERE verified_at IS NOT NULL") == [(0,)]
    assert not list(d.store.glob(".offsite-drill-*"))  # the fetched copy: removed
    [copy] = d.status_json()["offsite"]
    assert copy["host"] == "web1" and copy["last_status"] == "succeeded"
    assert copy["last_copied"] is not None and copy["copy_verified"] > copy["last_copied"]
    assert "never" not in d.backupctl("offsite", "status", check=True).stdout

    # a copy that does not restore (a segment changed on the remote): failed, alerted once
    segments = sorted(
        (p for p in (s3.root / "backups/fleet/web1/data").rglob("*") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    biggest = segments[-1]
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    biggest.write_bytes(bytes(data))
    broken = d.backupctl("offsite", "drill", "web1")
    assert broken.returncode == 19, broken.stdout + broken.stderr
    assert "remote eu: " in broken.stderr and "checksum mismatch" in broken.stderr
    assert 'File "' not in broken.stderr  # what Borg raised, not its traceback
    [(kind, message)] = alerts(d)
    assert kind == "offsite_drill_failed" and "web1" in str(message), message
    # seen where a person looks: offsite status and status say why, the metric is 0
    said_status = d.backupctl("offsite", "status", check=True).stdout
    assert "  ! drill: " in said_status and "checksum mismatch" in said_status, said_status
    assert "the newest drill of the copy failed" in d.backupctl("status").stdout
    metrics = d.backupctl("metrics", check=True).stdout
    assert 'backupd_offsite_last_drill_success{host="web1"} 0.0' in metrics
    assert s3.secret_key not in said + broken.stderr + str(message)


def test_a_postgresql_source_is_drilled_from_the_copy_with_its_globals(
    deploy: Callable[..., Deployment],
    pg_cluster: PostgresCluster,
    shop_db: str,
    s3: S3Server,
    tmp_path: Path,
) -> None:
    """Found by a new-user trial: the database's companion (the cluster's roles, from the
    same run's _globals archive) was read from the local repository the catalogue names,
    which a Borg of the copy's own refused as relocated: every PostgreSQL drill of a copy
    failed. Now it comes from the copy."""
    d = deploy({"maindb": pg_source(pg_cluster, databases=[shop_db])})
    d.backupctl("backup", "now", "web1/maindb", check=True)
    with_offsite(d, s3, tmp_path)
    d.backupctl("offsite", "run", "web1", check=True)
    drilled = d.backupctl("offsite", "drill", "web1")
    assert drilled.returncode == 0, drilled.stderr
    assert "restored and checked: maindb (2 archives)" in drilled.stdout, drilled.stdout
    assert alerts(d) == []
