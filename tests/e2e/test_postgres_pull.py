"""Issue 2's vertical slice against real sshd, PostgreSQL and borg."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import Deployment, pg_source, row_counts
from tests.harness.droplet import Droplet
from tests.harness.postgres import PostgresCluster
from tests.harness.procs import descendants

pytestmark = pytest.mark.e2e


def test_pull_restore_and_pg_restore_give_the_same_rows(
    deploy: Callable[..., Deployment], shop_db: str, pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    d = deploy({"maindb": pg_source(pg_cluster, databases=[shop_db], globals=False)})
    result = d.backupctl("backup", "now", "web1/maindb")
    assert result.returncode == 0, result.stderr
    assert "web1/maindb: ok, 1 archive(s)" in result.stdout

    [row] = d.status()
    assert row["host"] == "web1" and row["source"] == "maindb" and row["kind"] == "postgresql"
    assert row["last_status"] == "succeeded" and row["last_success"]

    [archive] = d.archives("web1")
    assert archive.startswith("maindb.shop.")
    [(name, recorded_sha, nbytes)] = d.catalogue_rows("SELECT name, sha256, nbytes FROM archives")
    assert name == archive

    # The archive says what it is in its comment and carries its seal (hash, size) inside:
    # what a catalogue rebuild reads (decision 0019); nothing else is in it.
    where = f"{d.store / 'web1'}::{archive}"
    info = json.loads(d.borg("info", "--json", where).stdout)
    comment = json.loads(info["archives"][0]["comment"])
    assert comment["host"] == "web1" and comment["item"] == "shop"
    seal = json.loads(d.borg("extract", "--stdout", where, ".backupd-seal.json").stdout)
    assert seal["sha256"] == recorded_sha and seal["nbytes"] == nbytes
    assert d.borg("list", "--short", where).stdout.split() == ["shop.pgdump", ".backupd-seal.json"]

    out = tmp_path / "restored"
    d.backupctl("restore", "web1/maindb", "--to", str(out), check=True)
    dump = out / "shop.pgdump"
    assert hashlib.sha256(dump.read_bytes()).hexdigest() == recorded_sha
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600

    pg_cluster.psql("DROP DATABASE IF EXISTS shop_restored")
    pg_cluster.createdb("shop_restored")
    subprocess.run(
        [
            "pg_restore",
            "--host",
            str(pg_cluster.socket_dir),
            "--port",
            str(pg_cluster.port),
            "--username",
            pg_cluster.superuser,
            "--no-owner",
            "--exit-on-error",
            "--dbname",
            "shop_restored",
            str(dump),
        ],
        check=True,
        capture_output=True,
    )
    assert row_counts(pg_cluster, "shop_restored") == row_counts(pg_cluster, shop_db)
    assert row_counts(pg_cluster, "shop_restored")["orders"] == 15000
    pg_cluster.psql("DROP DATABASE shop_restored")


def test_state_written_by_the_daemon_is_private(
    deploy: Callable[..., Deployment], shop_db: str, pg_cluster: PostgresCluster
) -> None:
    d = deploy({"maindb": pg_source(pg_cluster, databases=[shop_db], globals=False)})
    d.backupd("--once", check=True)
    assert stat.S_IMODE(d.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((d.state_dir / "catalogue.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((d.store / "web1").stat().st_mode) & 0o077 == 0
    # the passphrase never reaches the catalogue
    secret = d.passphrase_file.read_text().strip()
    assert secret.encode() not in (d.state_dir / "catalogue.db").read_bytes()


def test_a_refused_restore_changes_nothing(
    deploy: Callable[..., Deployment], shop_db: str, pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    d = deploy({"maindb": pg_source(pg_cluster, databases=[shop_db], globals=False)})
    none_yet = d.backupctl("restore", "web1/maindb", "--to", str(tmp_path / "x"))
    assert none_yet.returncode == 8
    assert "web1/maindb: no successful backup recorded yet" in none_yet.stderr
    assert "Traceback" not in none_yet.stderr
    d.backupctl("backup", "now", "web1/maindb", check=True)
    out = tmp_path / "busy"
    out.mkdir()
    (out / "shop.pgdump").write_text("precious")
    refused = d.backupctl("restore", "web1/maindb", "--to", str(out))
    assert refused.returncode == 9 and "refusing to overwrite" in refused.stderr
    assert (out / "shop.pgdump").read_text() == "precious"
    unknown = d.backupctl("restore", "web1/nosuch", "--to", str(out))
    assert unknown.returncode == 2 and "unknown source 'nosuch'" in unknown.stderr


def test_a_changed_host_key_is_refused_and_nothing_is_written(
    deploy: Callable[..., Deployment], shop_db: str, pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    d = deploy(
        {"maindb": pg_source(pg_cluster, databases=[shop_db], globals=False)}, host_key=wrong
    )
    result = d.backupctl("backup", "now", "web1/maindb")
    assert result.returncode == 1
    assert "HOST KEY CHANGED" in result.stderr and "refusing to connect" in result.stderr
    assert not d.store.exists()  # not even a repository was initialised
    [(status, error)] = d.catalogue_rows("SELECT status, error FROM runs")
    assert status == "failed" and "web1/maindb" in error and "HOST KEY CHANGED" in error


def test_a_failing_dump_leaves_no_archive_and_says_why(
    deploy: Callable[..., Deployment], pg_cluster: PostgresCluster
) -> None:
    d = deploy({"maindb": pg_source(pg_cluster, databases=["no_such_db"], globals=False)})
    result = d.backupctl("backup", "now", "web1/maindb")
    assert result.returncode == 1
    assert d.archives("web1") == []
    [(status, error)] = d.catalogue_rows("SELECT status, error FROM runs")
    assert status == "failed"
    assert "web1/maindb: no_such_db: taking a snapshot and facts failed: psql ended" in error
    assert 'database "no_such_db" does not exist' in error
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_too_small_dump_is_refused(
    deploy: Callable[..., Deployment], shop_db: str, pg_cluster: PostgresCluster
) -> None:
    d = deploy(
        {"maindb": pg_source(pg_cluster, databases=[shop_db], globals=False, min_bytes="1GiB")}
    )
    assert d.backupctl("backup", "now", "web1/maindb").returncode == 1
    assert d.archives("web1") == []
    [(error,)] = d.catalogue_rows("SELECT error FROM runs")
    assert "below min_bytes=1073741824" in error


@pytest.fixture(scope="module")
def big_db(pg_cluster: PostgresCluster) -> str:
    """About 40 MB of poorly compressible rows: enough to kill a dump mid-stream."""
    pg_cluster.psql("DROP DATABASE IF EXISTS big WITH (FORCE)")
    pg_cluster.createdb("big")
    pg_cluster.psql(
        "CREATE TABLE blob AS SELECT g AS id, md5(random()::text) || md5(random()::text) "
        "|| md5(random()::text) || md5(random()::text) AS body "
        "FROM generate_series(1, 300000) g",
        db="big",
    )
    return "big"


def _slow_deploy(deploy: Callable[..., Deployment], cluster: PostgresCluster) -> Deployment:
    d = deploy({"bigdb": pg_source(cluster, databases=["big"], globals=False)})
    # zstd level 22 makes borg a slow reader, so pg_dump is certainly still streaming
    # when the test strikes; this says nothing about how fast real runs are.
    text = d.config.read_text().replace("[store]\n", '[store]\ncompression = "zstd,22"\n')
    d.config.write_text(text)
    return d


def _strike_mid_stream(
    d: Deployment, strike: Callable[[], bool]
) -> subprocess.CompletedProcess[str]:
    results: list[subprocess.CompletedProcess[str]] = []
    worker = threading.Thread(
        target=lambda: results.append(d.backupctl("backup", "now", "web1/bigdb"))
    )
    worker.start()
    deadline = time.monotonic() + 60
    struck = False
    while time.monotonic() < deadline and worker.is_alive() and not struck:
        struck = strike()
        time.sleep(0.05)
    worker.join(timeout=300)
    assert struck, "the dump finished before the test could interrupt it"
    return results[0]


def _pg_dump_pid(droplet: Droplet, min_written: int) -> int | None:
    out = subprocess.run(
        ["pgrep", "-u", droplet.user, "-x", "pg_dump"], capture_output=True, text=True, check=False
    ).stdout.split()
    ours = set(descendants(droplet.pid or 0))  # this droplet's, not a concurrent run's
    for pid in (p for p in out if int(p) in ours):
        try:
            io = Path(f"/proc/{pid}/io").read_text()
        except OSError:
            continue
        written = int(io.split("wchar:")[1].split()[0])
        if written >= min_written:
            return int(pid)
    return None


def test_kill_9_of_the_remote_pg_dump_mid_stream_leaves_no_archive(
    deploy: Callable[..., Deployment], big_db: str, pg_cluster: PostgresCluster, droplet: Droplet
) -> None:
    d = _slow_deploy(deploy, pg_cluster)

    def strike() -> bool:
        pid = _pg_dump_pid(droplet, 4 * 1024 * 1024)
        if pid is None:
            return False
        subprocess.run(["kill", "-9", str(pid)], check=False)
        return True

    result = _strike_mid_stream(d, strike)
    assert result.returncode == 1
    assert d.archives("web1") == []
    [(status, error, tail)] = d.catalogue_rows("SELECT status, error, stderr_tail FROM runs")
    assert status == "failed"
    assert "web1/bigdb: big: pg_dump exited with status 137" in error
    assert "pg_dump killed by signal 9" in tail
    assert not list((d.state_dir / "run").iterdir())  # relay spec files cleaned up


def test_a_dump_whose_server_side_dies_mid_stream_fails_with_the_remote_message(
    deploy: Callable[..., Deployment], big_db: str, pg_cluster: PostgresCluster
) -> None:
    d = _slow_deploy(deploy, pg_cluster)

    def strike() -> bool:
        killed = pg_cluster.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'pg_dump' AND query LIKE 'COPY%'"
        )
        return int(killed) > 0

    result = _strike_mid_stream(d, strike)
    assert result.returncode == 1
    assert d.archives("web1") == []
    [(status, error)] = d.catalogue_rows("SELECT status, error FROM runs")
    assert status == "failed"
    assert "pg_dump exited with status 1" in error
    assert (
        "terminating connection due to administrator command" in error or "server closed" in error
    )


def _use_known_hosts(d: Deployment, path: Path) -> None:
    text = d.config.read_text()
    start = text.index("host_key = ")
    end = text.index("\n", start)
    d.config.write_text(text[:start] + f'known_hosts = "{path}"' + text[end:])


def test_an_unknown_host_key_is_refused(
    deploy: Callable[..., Deployment],
    shop_db: str,
    pg_cluster: PostgresCluster,
    droplet: Droplet,
    tmp_path: Path,
) -> None:
    d = deploy({"maindb": pg_source(pg_cluster, databases=[shop_db], globals=False)})
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:1 {droplet.host_key_line}\n")  # another host's entry
    _use_known_hosts(d, known)
    result = d.backupctl("backup", "now", "web1/maindb")
    assert result.returncode == 1
    assert "unknown host key ssh-ed25519 SHA256:" in result.stderr
    assert not d.store.exists()

    known.write_text("[127.0.0.1]:1 ssh-ed25519 AAAAnot-base64\n")
    result = d.backupctl("backup", "now", "web1/maindb")
    assert result.returncode == 1
    assert "known_hosts" in result.stderr and "malformed" in result.stderr
    assert "Traceback" not in result.stderr


def test_row_facts_match_the_dump_exactly_while_the_database_is_written(
    deploy: Callable[..., Deployment], shop_db: str, pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    d = deploy({"maindb": pg_source(pg_cluster, databases=[shop_db], globals=False)})
    stop, writing = threading.Event(), threading.Event()

    def writer() -> None:
        while not stop.is_set():
            pg_cluster.psql("INSERT INTO orders (customer_id, total) VALUES (1, 9.99)", db=shop_db)
            writing.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writing.wait(timeout=60)  # a row committed before the dump starts: ordered
        result = d.backupctl("backup", "now", "web1/maindb")
    finally:
        stop.set()
        thread.join()
    pg_cluster.psql("INSERT INTO orders (customer_id, total) VALUES (1, 9.99)", db=shop_db)
    assert result.returncode == 0, result.stderr
    [(facts_json,)] = d.catalogue_rows("SELECT facts FROM archives")
    facts = json.loads(facts_json)
    assert set(facts["rows"]) == {"public.customers", "public.notes", "public.orders"}
    assert facts["table_bytes"]["public.orders"] > 0

    out = tmp_path / "restored"
    d.backupctl("restore", "web1/maindb", "--to", str(out), check=True)
    pg_cluster.psql("DROP DATABASE IF EXISTS shop_facts")
    pg_cluster.createdb("shop_facts")
    subprocess.run(
        [
            "pg_restore",
            "--host",
            str(pg_cluster.socket_dir),
            "--port",
            str(pg_cluster.port),
            "--username",
            pg_cluster.superuser,
            "--no-owner",
            "--dbname",
            "shop_facts",
            str(out / "shop.pgdump"),
        ],
        check=True,
        capture_output=True,
    )
    restored = {f"public.{t}": n for t, n in row_counts(pg_cluster, "shop_facts").items()}
    assert restored == facts["rows"]
    assert restored["public.orders"] > 15000  # the writer's rows made it into both alike
    assert row_counts(pg_cluster, shop_db)["orders"] > restored["public.orders"]
    pg_cluster.psql("DROP DATABASE shop_facts")


class TableLock:
    """Another session holding ACCESS EXCLUSIVE on a table (a migration's ALTER TABLE in an
    open transaction) until the block ends."""

    def __init__(self, cluster: PostgresCluster, db: str, table: str) -> None:
        from tests.harness.postgres import postgres_bindir

        self._proc = subprocess.Popen(
            [
                str(postgres_bindir() / "psql"),
                "-XAtq",
                "-h",
                str(cluster.socket_dir),
                "-p",
                str(cluster.port),
                "-U",
                cluster.superuser,
                "-d",
                db,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(
            f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;\nSELECT 'locked';\n"
        )
        self._proc.stdin.flush()
        assert self._proc.stdout.readline().strip() == "locked"  # held from here on

    def __enter__(self) -> TableLock:
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()  # psql ends; the transaction rolls back
        self._proc.wait(timeout=60)


def test_a_table_locked_by_another_session_fails_after_lock_timeout_with_the_reason(
    deploy: Callable[..., Deployment], pg_cluster: PostgresCluster, shop_db: str
) -> None:
    """The facts session stops waiting after lock_timeout (pg_dump has the same limit as
    --lock-wait-timeout), not after the stream's 10-minute idle timeout; the run says why."""
    d = deploy(
        {"maindb": pg_source(pg_cluster, databases=[shop_db], globals=False, lock_timeout="2s")}
    )
    with TableLock(pg_cluster, shop_db, "orders"):
        result = d.backupctl("backup", "now", "web1/maindb")
    assert result.returncode == 1
    assert d.archives("web1") == []
    [(error,)] = d.catalogue_rows("SELECT error FROM runs")
    assert error == (
        "web1/maindb: shop: taking a snapshot and facts failed: a table is locked "
        "by another session (waited lock_timeout=2s): ERROR:  canceling statement "
        "due to lock timeout"
    )
    # once the lock is gone the same source backs up
    d.backupctl("backup", "now", "web1/maindb", check=True)


def test_min_bytes_as_the_example_sets_it_applies_to_databases_not_the_globals(
    deploy: Callable[..., Deployment], pg_cluster: PostgresCluster, shop_db: str
) -> None:
    """config/backupd.example.toml sets min_bytes = "10KiB" on a PostgreSQL source with
    globals: the globals (a few hundred bytes here) must not be refused for it, while a
    database dump below it still is."""
    pg_cluster.psql("DROP DATABASE IF EXISTS tiny")
    pg_cluster.createdb("tiny")
    d = deploy(
        {
            "maindb": pg_source(pg_cluster, databases=[shop_db], min_bytes="10KiB"),
            "tinydb": pg_source(pg_cluster, databases=["tiny"], globals=False, min_bytes="10KiB"),
        }
    )
    try:
        d.backupctl("backup", "now", "web1/maindb", check=True)
        assert d.backupctl("backup", "now", "web1/tinydb").returncode == 1
    finally:
        pg_cluster.psql("DROP DATABASE IF EXISTS tiny")
    sizes = dict(d.catalogue_rows("SELECT item, nbytes FROM archives"))
    assert int(sizes["_globals"]) < 10 * 1024 < int(sizes[shop_db])  # type: ignore[call-overload]
    [(error,)] = d.catalogue_rows("SELECT error FROM runs WHERE status = 'failed'")
    assert "below min_bytes=10240" in error
