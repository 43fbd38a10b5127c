"""A Borg lock held by someone else: backups, restores and maintenance say who holds it and
how to clear it, at once; they wait (and say so) only for backupd's own live jobs.

Real borg holds the locks (``borg with-lock``, a backup held mid-dump by the gated sqlite3
stand-in); another machine's lock and a reused pid are written as borg writes its files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from backupd.borg.lock import repository_id
from backupd.local.procfs import kill_tree, process_alive
from tests.e2e.conftest import BIN, Deployment, pg_source
from tests.e2e.test_restore_targets import add_targets, databases
from tests.harness.daemon import Gate, make_gate, make_sqlite_db, wait_for
from tests.harness.droplet import Droplet
from tests.harness.fleet import HostSpec, write_fleet_config, write_passphrase
from tests.harness.postgres import PostgresCluster

pytestmark = pytest.mark.e2e
TARGET = "web1/db"


@dataclass
class Site:
    """A deployment whose one source (web1/db, SQLite) dumps through a gate the test holds."""

    d: Deployment
    gate: Gate
    started: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def repo(self) -> Path:
        return self.d.store / "web1"

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> Running:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.started.append(proc)
        return Running(proc)

    def backupctl(self, *args: str) -> Running:
        return self.start([str(BIN / "backupctl"), "--config", str(self.d.config), *args])

    def operator_borg(self, *args: str) -> Running:
        """borg as an operator runs it: its own BORG_BASE_DIR, the passphrase from the file."""
        env = {
            **os.environ,
            "BORG_PASSCOMMAND": f"cat {self.d.passphrase_file}",
            "BORG_BASE_DIR": str(self.d.root / "operator"),
        }
        return self.start([str(BIN / "borg"), *args], env)

    def hold(self) -> Running:
        """An operator's ``borg with-lock REPO sleep 600``, holding the lock on return."""
        holder = self.operator_borg("with-lock", str(self.repo), "sleep", "600")
        wait_for("the operator's borg to hold the lock", lambda: self.held_by(holder.proc.pid))
        return holder

    def stop(self) -> None:
        """Teardown: nothing the test started keeps running, pass or fail."""
        self.gate.release()
        for proc in self.started:
            if proc.poll() is None:
                kill_tree(proc.pid)
            proc.wait(timeout=60)

    def lock_files(self, lock: Path | None = None) -> list[str]:
        directory = (lock or self.repo / "lock").with_name("lock.exclusive")
        return os.listdir(directory) if directory.is_dir() else []

    def held_by(self, pid: int) -> bool:
        return any(name.endswith(f".{pid}-0") for name in self.lock_files())

    def kinds_of_alerts(self) -> list[str]:
        return [str(k) for (k,) in self.d.catalogue_rows("SELECT kind FROM alert_events")]


class Running:
    """A process whose stderr lines the test can wait for while it runs."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._pump = threading.Thread(target=self._read_stderr, daemon=True)
        self._pump.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def finish(self) -> tuple[int, str, str]:
        """Wait for it to end: (exit code, stdout, stderr)."""
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self.proc.wait(timeout=300)
        self._pump.join(timeout=60)
        return self.proc.returncode, out, "\n".join(self.lines)


@pytest.fixture
def site(servers_dir: Path, droplet: Droplet) -> Iterator[Site]:
    root = Path(tempfile.mkdtemp(prefix="locks-", dir=servers_dir))
    root.chmod(0o755)  # the droplet's user reads the database and the gate here
    gate = make_gate(root)
    db = make_sqlite_db(root / "app.db")
    passphrase = write_passphrase(root / "passphrase")
    source = {"kind": "sqlite", "path": str(db), "sqlite3": str(gate.script)}
    config = write_fleet_config(
        root / "backupd.toml",
        state_dir=root / "state",
        store=root / "store",
        passphrase_file=passphrase,
        hosts=[HostSpec("web1", droplet, {"db": source})],
    )
    s = Site(Deployment(root, config, root / "state", root / "store", passphrase), gate)
    yield s
    s.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_site(
    deploy: Callable[..., Deployment], pg_cluster: PostgresCluster, shop_db: str
) -> Iterator[Site]:
    """web1/maindb (PostgreSQL) backed up once, and a restore target on the same cluster."""
    d = deploy({"maindb": pg_source(pg_cluster, databases=[shop_db])})
    add_targets(
        d,
        staging={
            "kind": "postgresql",
            "socket_dir": str(pg_cluster.socket_dir),
            "port": pg_cluster.port,
            "username": "postgres",
        },
    )
    d.backupctl("backup", "now", "web1/maindb", check=True)
    s = Site(d, make_gate(d.root))
    yield s
    s.stop()
    pg_cluster.psql("DROP DATABASE IF EXISTS shop_locked WITH (FORCE)")


def backed_up(s: Site) -> None:
    s.d.backupctl("backup", "now", TARGET, check=True)


def second_backup_held(site: Site) -> Running:
    """A backup that holds the repository lock: its dump waits at the gate, borg waits for it."""
    backed_up(site)
    site.gate.hold()
    backup = site.backupctl("backup", "now", TARGET)
    wait_for("the second dump to start", lambda: site.gate.started() == 2)
    wait_for("its borg to hold the lock", site.lock_files)
    return backup


def end(holder: Running) -> None:
    """The operator's borg ends as it would: SIGTERM, and borg releases its lock."""
    os.killpg(holder.proc.pid, signal.SIGTERM)
    holder.finish()


def this_host_id(s: Site) -> str:
    """The host id real borg writes into its lock on this machine."""
    r = s.operator_borg("with-lock", str(s.repo), "ls", str(s.repo / "lock.exclusive"))
    _, out, _ = r.finish()
    return out.strip().rsplit(".", 1)[0]


def write_lock(lock: Path, host_id: str, pid: int, age: float, *, roster: bool = True) -> None:
    """A lock as borg writes it: the directory with HOSTID.PID-THREAD, and the roster."""
    directory = lock.with_name(lock.name + ".exclusive")
    directory.mkdir(parents=True)
    files = [directory / f"{host_id}.{pid}-0"]
    files[0].touch()
    if roster:
        files.append(lock.with_name(lock.name + ".roster"))
        files[-1].write_text(json.dumps({"exclusive": [[host_id, pid, 0]]}))
    then = time.time() - age
    for f in files:
        os.utime(f, (then, then))


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("backupctl: error: "), stderr
    return lines[0]


def test_an_operators_borg_fails_backup_and_restore_at_once_saying_who(site: Site) -> None:
    backed_up(site)
    holder = site.hold()

    code, _, err = site.backupctl("backup", "now", TARGET).finish()
    assert code == 1
    assert holder.proc.poll() is None  # it ended while the holder still held: it did not wait
    assert (
        f"is locked by pid {holder.proc.pid} on this machine (borg with-lock ..., "
        "not backupd's) since " in err
    )
    assert f"clear the lock with: borg break-lock {site.repo}" in err
    assert "Failed to create/acquire the lock" not in err  # not borg's lock-wait running out
    [(status, error)] = site.d.catalogue_rows("SELECT status, error FROM runs WHERE id = 2")
    assert status == "failed" and "not backupd's" in str(error)
    assert site.kinds_of_alerts() == ["backup_failed"]

    to = site.d.root / "restored"
    code, out, err = site.backupctl("restore", TARGET, "--to", str(to)).finish()
    assert code == 16 and out == ""
    line = one_error_line(err)
    assert f"repository {site.repo} is locked by pid {holder.proc.pid}" in line
    assert f"borg break-lock {site.repo}" in line and "not backupd's" in line
    assert holder.proc.poll() is None
    assert not to.exists() or not any(to.iterdir())

    end(holder)
    assert site.backupctl("backup", "now", TARGET).finish()[0] == 0
    assert site.backupctl("restore", TARGET, "--to", str(to)).finish()[0] == 0
    assert len(list(to.glob("*.sqlite"))) == 1
    assert site.kinds_of_alerts() == ["backup_failed"]  # nothing more once it was free


def test_another_machines_lock_says_it_cannot_tell_whether_it_is_stale(site: Site) -> None:
    backed_up(site)
    write_lock(site.repo / "lock", "otherbox.example@167772161", 4242, age=2 * 3600 + 5)
    code, _, err = site.backupctl("backup", "now", TARGET).finish()
    assert code == 1
    assert (
        "is locked by pid 4242 on another machine (host id otherbox.example@167772161) since "
    ) in err and "(2h 0m ago)" in err
    assert "cannot tell whether it is stale from here" in err
    code, _, err = site.backupctl("restore", TARGET, "--to", str(site.d.root / "r")).finish()
    assert code == 16 and "on another machine" in one_error_line(err)
    assert site.lock_files() == ["otherbox.example@167772161.4242-0"]  # never broken by us

    site.d.borg("break-lock", str(site.repo))  # what the message says to do
    assert site.backupctl("backup", "now", TARGET).finish()[0] == 0


def test_a_stale_lock_of_our_own_dead_backup_is_broken_silently(site: Site) -> None:
    crashed = second_backup_held(site)
    (name,) = site.lock_files()
    holder = int(name.rsplit(".", 1)[1].split("-")[0])
    # borg SIGKILLed first: it leaves its lock behind (killed after backupd, it would get the
    # SIGTERM backupd's children get when it dies, and release the lock itself)
    os.kill(holder, signal.SIGKILL)
    kill_tree(crashed.proc.pid)
    crashed.finish()
    assert site.lock_files() == [name]
    # a SIGKILL is delivered when the kernel next schedules the process, not when kill()
    # returns: wait for it to be gone rather than rely on the scheduler being quick
    wait_for("the killed borg to be gone", lambda: not process_alive(holder))
    site.gate.release()

    code, _, err = site.backupctl("backup", "now", TARGET).finish()
    assert code == 0, err  # broken by backupd, or by borg itself (its holder's pid is gone)
    assert "locked" not in err
    assert site.kinds_of_alerts() == ["run_interrupted"]  # the killed run; no lock alert


def test_a_lock_whose_pid_was_reused_is_stale(site: Site) -> None:
    """Borg itself would wait for ever: the pid is alive, but started after the lock."""
    backed_up(site)
    host_id = this_host_id(site)
    stranger = site.start(["sleep", "600"])
    write_lock(site.repo / "lock", host_id, stranger.proc.pid, age=3600)
    code, _, err = site.backupctl("backup", "now", TARGET).finish()
    assert code == 0, err
    assert "broke a Borg lock left by dead process" in err and "(pid reused since)" in err
    assert stranger.proc.poll() is None and site.kinds_of_alerts() == []


def test_a_restore_waits_for_our_own_backup_and_says_so(site: Site) -> None:
    backup = second_backup_held(site)
    to = site.d.root / "restored"
    restore = site.backupctl("restore", TARGET, "--to", str(to))
    wait_for(
        "the restore to say it waits",
        lambda: restore.said("waiting up to"),
        failing=lambda: restore.lines,
    )
    assert restore.proc.poll() is None and not to.exists()
    assert restore.said(f"for the backup of web1/db (pid {backup.proc.pid}) to finish")
    site.gate.release()
    code, out, err = restore.finish()
    assert code == 0, err
    assert "verified" in out and len(list(to.glob("*.sqlite"))) == 1
    assert backup.finish()[0] == 0
    assert site.kinds_of_alerts() == []


def test_maintenance_and_a_drill_meeting_an_operators_lock_fail_at_once(site: Site) -> None:
    backed_up(site)
    holder = site.hold()
    worker = [str(BIN / "python"), "-m", "backupd.daemon.worker", "--config", str(site.d.config)]
    prune = site.start([*worker, "prune", "web1"])
    assert prune.finish()[0] == 75  # transient: the daemon tries again later
    [(error,)] = site.d.catalogue_rows("SELECT error FROM maintenance_runs")
    assert f"locked by pid {holder.proc.pid}" in str(error) and "borg break-lock" in str(error)
    code, out, _ = site.backupctl("drill", TARGET).finish()
    assert code == 1 and "drill could not start: repository " in out
    assert f"locked by pid {holder.proc.pid}" in out
    assert holder.proc.poll() is None
    assert site.kinds_of_alerts() == ["prune_failed", "drill_failed"]
    end(holder)
    assert site.start([*worker, "prune", "web1"]).finish()[0] == 0
    assert site.backupctl("drill", TARGET).finish()[0] == 0
    assert site.kinds_of_alerts() == ["prune_failed", "drill_failed"]


def test_a_foreign_hold_on_backupds_cache_fails_backup_and_restore(site: Site) -> None:
    """Borg 1.4 takes the cache lock in every command that reads the manifest (extract too):
    a borg run by hand with backupd's BORG_BASE_DIR, or on a copy of the repository."""
    backed_up(site)
    repo_id = repository_id(site.repo)
    assert repo_id is not None
    cache = site.d.state_dir / "borg" / ".cache" / "borg" / repo_id
    stranger = site.start(["sleep", "600"])
    write_lock(cache / "lock", this_host_id(site), stranger.proc.pid, age=0)
    code, _, err = site.backupctl("backup", "now", TARGET).finish()
    assert code == 1
    assert (
        f"the Borg cache of repository {site.repo} ({cache}) is locked by pid "
        f"{stranger.proc.pid} on this machine (sleep 600, not backupd's)" in err
    )
    assert f"BORG_BASE_DIR={site.d.state_dir / 'borg'} borg break-lock {site.repo}" in err
    to = site.d.root / "restored"
    code, _, err = site.backupctl("restore", TARGET, "--to", str(to)).finish()
    assert code == 16 and f"the Borg cache of repository {site.repo}" in one_error_line(err)

    os.killpg(stranger.proc.pid, signal.SIGKILL)  # its holder gone: borg clears it itself
    stranger.finish()
    assert site.backupctl("backup", "now", TARGET).finish()[0] == 0
    assert site.backupctl("restore", TARGET, "--to", str(to)).finish()[0] == 0
    assert site.lock_files(cache / "lock") == []


def test_a_database_restore_meeting_a_lock_creates_no_database(
    pg_site: Site, pg_cluster: PostgresCluster
) -> None:
    """The lock is judged before the database is created: nothing to drop afterwards."""
    into = ("restore", "web1/maindb", "--into-db", "staging", "--as", "shop_locked")
    holder = pg_site.hold()
    code, _, err = pg_site.backupctl(*into).finish()
    assert code == 16 and f"locked by pid {holder.proc.pid}" in one_error_line(err)
    assert "shop_locked" not in databases(pg_cluster)
    [(status, error)] = pg_site.d.catalogue_rows("SELECT status, error FROM restores")
    assert status == "failed" and "not backupd's" in str(error)
    end(holder)
    code, out, err = pg_site.backupctl(*into).finish()
    assert code == 0, err
    assert "into database shop_locked" in out and "shop_locked" in databases(pg_cluster)
