"""Restore drills against real servers: PostgreSQL, MariaDB and a volume pass; a damaged
archive and a dump whose rows differ from the recorded facts fail; nothing is left behind."""

from __future__ import annotations

import html
import json
import os
import signal
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, Deployment, pg_source
from tests.e2e.test_report_mail import RED_CELL
from tests.e2e.test_trees import DOCKER
from tests.harness.droplet import Droplet
from tests.harness.mariadb import MariaDBServer
from tests.harness.postgres import PostgresCluster
from tests.harness.procs import command_lines, ours, wait_until
from tests.json_contract import conforming

pytestmark = pytest.mark.e2e
SCRATCH_MARKERS = ("backupd-drill-", "/drills/drill-")


def scratch_leftovers() -> list[str]:
    """Processes and directories of scratch servers still around."""
    found = [
        f"process {pid}: {text[:120]}"
        for pid, text in command_lines()
        if ours(text) and any(m in text for m in SCRATCH_MARKERS) and "pytest" not in text
    ]
    found += [str(p) for p in Path(tempfile.gettempdir()).glob("backupd-drill-*")]
    return found


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    assert scratch_leftovers() == []
    yield
    assert scratch_leftovers() == [], "a drill left a scratch server or directory behind"


def drill(d: Deployment, target: str) -> tuple[int, list[dict[str, object]]]:
    result = d.backupctl("drill", target, "--json")
    assert "Traceback" not in result.stderr, result.stderr
    document = conforming("drill", result.stdout) if result.stdout else {"drills": []}
    return result.returncode, document["drills"]


def test_postgres_drill_restores_newest_and_an_older_point(
    deploy: Callable[..., Deployment], pg_cluster: PostgresCluster, shop_db: str
) -> None:
    d = deploy({"maindb": pg_source(pg_cluster, databases=[shop_db])})
    d.backupctl("backup", "now", "web1/maindb", check=True)
    pg_cluster.psql("INSERT INTO notes (body) VALUES ('after the first backup')", db=shop_db)
    d.backupctl("backup", "now", "web1/maindb", check=True)
    rc, results = drill(d, "web1/maindb")
    assert rc == 0, results
    assert [r["verdict"] for r in results] == ["pass"] * 4  # shop + globals, newest and older
    shop = [r for r in results if ".shop." in str(r["archive"])]
    assert len({r["archive"] for r in shop}) == 2
    checks = {c["check"]: c["detail"] for c in shop[0]["checks"]}  # type: ignore[attr-defined]
    assert checks["rows"] == "3 table(s), 17301 rows as recorded"
    assert checks["tables"] == "the same 3 table(s) as recorded"
    assert all(float(str(r["rto_seconds"])) > 0 for r in results)
    verified = d.catalogue_rows("SELECT count(*) FROM archives WHERE verified_at IS NOT NULL")
    assert verified == [(4,)]
    row = {r["source"]: r for r in d.status()}["maindb"]
    assert row["last_drill"]["verdict"] == "pass"  # type: ignore[index]
    assert pg_cluster.psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'drill_%'") == "0"


def test_mariadb_and_volume_drills_pass(
    deploy: Callable[..., Deployment],
    mariadb_server: MariaDBServer,
    shop_mariadb: str,
    droplet: Droplet,
) -> None:
    tree = droplet.root / "drill-tree"
    (tree / "docs").mkdir(parents=True, exist_ok=True)
    for i in range(20):
        (tree / "docs" / f"f{i}.txt").write_text(f"file {i}\n" * 100)
    if os.geteuid() == 0:
        os.system(f"chown -R {droplet.user} {tree}")
    docker = droplet.bin_dir / "docker"  # the volume "uploads_data" lives at tree
    docker.write_text(DOCKER % tree)
    docker.chmod(0o755)
    d = deploy(
        {
            "shopdb": {
                "kind": "mariadb",
                "databases": [shop_mariadb],
                "socket": str(mariadb_server.socket),
                "username": "root",
            },
            "files": {"kind": "volume", "volume": "uploads_data", "drill_paths": ["docs/f7.txt"]},
        }
    )
    try:
        d.backupctl("backup", "now", "web1", check=True)
    finally:
        docker.unlink()
    rc, results = drill(d, "web1")
    assert rc == 0, results
    by_source = {r["source"]: r for r in results}
    assert by_source["shopdb"]["verdict"] == "pass" and by_source["files"]["verdict"] == "pass"
    checks = {c["check"]: c["detail"] for c in by_source["files"]["checks"]}  # type: ignore[attr-defined]
    assert checks["files"].startswith("20 file(s)") and "1 required path(s)" in checks["paths"]
    shop_checks = {c["check"]: c["detail"] for c in by_source["shopdb"]["checks"]}  # type: ignore[attr-defined]
    assert shop_checks["rows"] == "3 table(s), 23001 rows as recorded"
    assert shop_checks["tables"] == "the same 3 table(s) as recorded"


def red_in_report(d: Deployment) -> list[str]:
    """The cells the weekly report shows in red (its HTML preview)."""
    preview = d.root / "report.html"
    d.backupctl("report", "--preview", str(preview), check=True)
    return [html.unescape(c) for c in RED_CELL.findall(preview.read_text())]


def corrupt_largest_segment(repo: Path) -> None:
    """Alter bytes in the middle of the repository's largest segment file (chunk data)."""
    segment = max(
        (p for p in (repo / "data").rglob("*") if p.is_file() and p.name.isdigit()),
        key=lambda p: p.stat().st_size,
    )
    data = bytearray(segment.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    segment.write_bytes(bytes(data))


def test_a_damaged_archive_fails_the_drill(
    deploy: Callable[..., Deployment], pg_cluster: PostgresCluster, shop_db: str
) -> None:
    d = deploy({"maindb": pg_source(pg_cluster, databases=[shop_db], globals=False)})
    d.backupctl("backup", "now", "web1/maindb", check=True)
    corrupt_largest_segment(d.store / "web1")
    rc, results = drill(d, "web1/maindb")
    assert rc == 1
    [result] = results
    assert result["verdict"] == "fail"
    assert "drill of maindb.shop." in str(result["detail"]) and "failed" in str(result["detail"])
    [(status, detail)] = d.catalogue_rows("SELECT status, detail FROM drills")
    assert status == "fail" and "borg extract failed" in str(detail)
    assert d.catalogue_rows("SELECT kind FROM alert_events") == [("drill_failed",)]
    assert d.catalogue_rows("SELECT verified_at FROM archives") == [(None,)]
    red = red_in_report(d)
    assert "FAIL" in red and any("borg extract failed" in c for c in red)


def test_rows_that_differ_from_the_recorded_facts_fail_the_drill(
    deploy: Callable[..., Deployment], pg_cluster: PostgresCluster, shop_db: str
) -> None:
    d = deploy({"maindb": pg_source(pg_cluster, databases=[shop_db], globals=False)})
    d.backupctl("backup", "now", "web1/maindb", check=True)
    with sqlite3.connect(d.state_dir / "catalogue.db") as db:
        [(aid, facts)] = db.execute("SELECT id, facts FROM archives")
        changed = json.loads(facts)
        changed["rows"]["public.customers"] = 1999
        db.execute("UPDATE archives SET facts = ? WHERE id = ?", (json.dumps(changed), aid))
    rc, [result] = drill(d, "web1/maindb")
    assert rc == 1 and result["verdict"] == "fail"
    assert "public.customers: 2000 rows, recorded 1999" in str(result["detail"])
    text = d.backupctl("status").stdout
    assert "fail" in text.split("web1/maindb", 1)[1].splitlines()[0]
    red = red_in_report(d)
    assert "FAIL" in red and any("public.customers: 2000 rows, recorded 1999" in c for c in red)


def test_a_drill_killed_mid_way_is_cleaned_up_at_the_next_start(
    deploy: Callable[..., Deployment], pg_cluster: PostgresCluster, shop_db: str
) -> None:
    d = deploy({"maindb": pg_source(pg_cluster, databases=[shop_db], globals=False)})
    d.backupctl("backup", "now", "web1/maindb", check=True)
    proc = subprocess.Popen(
        [str(BIN / "backupctl"), "--config", str(d.config), "drill", "web1/maindb"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=False,
    )
    try:
        # a running server (its postmaster.pid), not initdb ("postgres" is in its path too)
        scratch = Path(tempfile.gettempdir())
        wait_until(lambda: any(scratch.glob("backupd-drill-*/**/postmaster.pid")), 120, "a server")
    finally:
        proc.kill()  # SIGKILL: no cleanup of its own
        proc.wait()
    assert scratch_leftovers()  # the scratch server outlived it
    d.backupctl("backup", "now", "web1/maindb", check=True)  # any start reconciles
    assert scratch_leftovers() == []
    [(status, detail)] = d.catalogue_rows("SELECT status, detail FROM drills")
    assert status == "interrupted" and "scratch server and files were removed" in str(detail)


def test_a_scratch_server_that_cannot_start_fails_the_drill_clearly(
    deploy: Callable[..., Deployment], pg_cluster: PostgresCluster, shop_db: str
) -> None:
    d = deploy({"maindb": pg_source(pg_cluster, databases=[shop_db], globals=False)})
    with d.config.open("a") as f:
        f.write('\n[drills]\npostgres_bindir = "/nonexistent/pg/bin"\n')
    d.backupctl("backup", "now", "web1/maindb", check=True)
    rc, [result] = drill(d, "web1/maindb")
    assert rc == 1 and result["verdict"] == "fail"
    why = "scratch postgresql server: /nonexistent/pg/bin/initdb: not found on the backup host"
    assert f"drill could not start: {why}" in str(result["detail"])
    assert d.catalogue_rows("SELECT status FROM drills") == [("fail",)]
    assert d.catalogue_rows("SELECT kind FROM alert_events") == [("drill_failed",)]


def test_a_drill_stopped_by_a_shutdown_is_interrupted_and_alerts_nobody(
    deploy: Callable[..., Deployment], pg_cluster: PostgresCluster, shop_db: str
) -> None:
    """The daemon stopping while a drill runs (a restart, an upgrade) is no verdict on the
    backup: the drill rows and the job are interrupted, no drill_failed alert is raised,
    and the scratch server is gone (the autouse fixture)."""
    d = deploy({"maindb": pg_source(pg_cluster, databases=[shop_db])})
    with d.config.open("a") as f:  # a check that never ends: the stop lands mid-drill
        f.write(
            '\n[[hosts.web1.sources.maindb.drill_sql]]\nsql = "SELECT 1 FROM pg_sleep(600)"\n'
            'expect = "1"\n'
        )
    d.backupctl("backup", "now", "web1/maindb", check=True)
    argv = [str(BIN / "python"), "-m", "backupd.daemon.worker", "--config", str(d.config)]
    worker = subprocess.Popen(
        [*argv, "drill", "web1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:

        def drilling() -> bool:
            rows = d.catalogue_rows("SELECT count(*) FROM drills WHERE status = 'running'")
            mine = f"{tempfile.gettempdir()}/backupd-drill-"  # this test's, not a neighbour's
            scratch = any(mine in text for _, text in command_lines())
            return rows[0][0] > 0 and scratch

        wait_until(drilling, 120, "the drill's scratch server")
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 75, err  # interrupted: the daemon's catch-up runs it again
    assert "Traceback" not in err
    drills = d.catalogue_rows("SELECT status, detail FROM drills")
    assert drills and {status for status, _ in drills} == {"interrupted"}
    assert "drill stopped: stopped before it finished" in str(drills[0][1])
    jobs = d.catalogue_rows("SELECT status FROM maintenance_runs WHERE job = 'drill'")
    assert jobs == [("interrupted",)]
    assert d.catalogue_rows("SELECT kind FROM alert_events") == []
