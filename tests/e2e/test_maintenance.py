"""Maintenance jobs against real Borg repositories with dated archives (no droplet needed)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backupd.actions.context import Context
from backupd.actions.maintain import jobs_for, run_maintenance
from backupd.catalogue import Archive, MaintenanceRun, RunStatus
from jobs.base import MaintenanceEnv
from jobs.compact import segments_size
from jobs.registry import load_config, maintenance_registry
from tests.harness.fleet import toml_value, write_passphrase

pytestmark = pytest.mark.e2e
BORG = Path(sys.executable).parent / "borg"
HOST = "web1"

# [hosts.web1.sources.db.retention]: last 2, daily 3, weekly 1, monthly 2
DB_APP = {  # archive time -> kept by (None: pruned)
    "2024-03-10 02:00": "last",
    "2024-03-09 02:00": "last",
    "2024-03-09 01:00": None,  # the 9th is already kept
    "2024-03-08 02:00": "daily",
    "2024-03-07 02:00": "daily",
    "2024-03-06 02:00": "daily",
    "2024-03-01 02:00": "weekly",  # ISO week 9 (week 10 is used up by the 10th)
    "2024-02-20 02:00": "monthly",
    "2024-02-10 02:00": "verified",  # the newest that passed a drill
    "2024-02-05 02:00": None,  # passed a drill too, but an older one
    "2024-01-15 02:00": "monthly",
    "2023-12-01 02:00": None,
}
DB_GLOBALS = {"2024-03-10 02:00": "last", "2024-03-09 02:00": "last"}
FILES_DATA = {"2024-03-10 03:00": "last", "2024-03-09 03:00": None, "2024-03-08 03:00": None}
FOREIGN = ["ghost.x.2024-01-01T02:00:00.000Z", "manual-copy-before-upgrade"]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def archive(source: str, item: str, when: str) -> str:
    t = at(when)
    return f"{source}.{item}.{t.strftime('%Y-%m-%dT%H:%M:%S')}.000Z"


@dataclass
class Store:
    """A backupd config over a store whose repositories the test fills by hand."""

    root: Path
    ctx: Context

    @property
    def repo(self) -> Path:
        return self.ctx.repository(HOST)

    def add(self, source: str, item: str, when: str, *, record: bool = True) -> str:
        """A real archive dated ``when`` (UTC) holding 64 KiB of its own, and its row."""
        name = archive(source, item, when) if item else source
        self.add_named(name, when)
        if record:
            source_id = self.ctx.catalogue.ensure_source(HOST, "127.0.0.1", source, "directory")
            self.ctx.catalogue.add_archive(
                run_id=None,
                source_id=source_id,
                repository=str(self.repo),
                name=name,
                item=item,
                filename="data/",
                created_at=at(when),
                nbytes=65536,
                sha256="0" * 64,
            )
        return name

    def add_named(self, name: str, when: str) -> None:
        self.ctx.borg.ensure_repository(self.repo, "repokey-blake2")
        work = self.root / "payload"
        work.mkdir(exist_ok=True)
        (work / "payload").write_bytes(os.urandom(65536))
        stamp = at(when).isoformat()
        self.ctx.borg.run(
            ("create", "--timestamp", stamp, f"{self.repo}::{name}", "payload"), cwd=str(work)
        )

    def borg(self, *args: str) -> str:
        """borg as a person would run it: its own cache, passphrase from the file."""
        env = {
            **os.environ,
            "BORG_PASSCOMMAND": f"cat {self.root / 'passphrase'}",
            "BORG_BASE_DIR": str(self.root / "borg-test"),
        }
        done = subprocess.run(
            [str(BORG), *args], capture_output=True, text=True, env=env, check=True
        )
        return done.stdout

    def names(self, repo: Path | None = None) -> set[str]:
        return set(self.borg("list", "--short", str(repo or self.repo)).split())

    def rows(self) -> dict[str, Archive]:
        with self.ctx.catalogue.session() as s:
            return {a.name: a for a in s.query(Archive).all()}

    def run_row(self, run_id: int) -> MaintenanceRun:
        with self.ctx.catalogue.session() as s:
            return s.get_one(MaintenanceRun, run_id)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    passphrase = write_passphrase(tmp_path / "passphrase")
    config = tmp_path / "backupd.toml"
    config.write_text(f"""
state_dir = {toml_value(str(tmp_path / "state"))}
[store]
path = {toml_value(str(tmp_path / "store"))}
[passphrase]
file = {toml_value(str(passphrase))}
[maintenance]
verify_archives = 2
[hosts.{HOST}]
address = "127.0.0.1"
user = "backup"
key = "id_ed25519"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx"
[hosts.{HOST}.sources.db]
kind = "directory"
path = "/srv/db"
retention = {{ keep_last = 2, keep_daily = 3, keep_weekly = 1, keep_monthly = 2 }}
[hosts.{HOST}.sources.files]
kind = "directory"
path = "/srv/files"
retention = {{ keep_last = 1, keep_daily = 0, keep_weekly = 0, keep_monthly = 0 }}
""")
    return Store(tmp_path, Context(load_config(config)))


def test_prune_keeps_what_the_policy_and_the_drill_rule_say(store: Store) -> None:
    names = {archive("db", "app", t): why for t, why in DB_APP.items()}
    names |= {archive("db", "globals", t): why for t, why in DB_GLOBALS.items()}
    names |= {archive("files", "data", t): why for t, why in FILES_DATA.items()}
    for name in names:
        source, item, _ = name.split(".", 2)
        store.add(source, item, name.split(".", 2)[2].replace("T", " ")[:16])
    store.add_named(FOREIGN[0], "2024-01-01 02:00")
    store.add_named(FOREIGN[1], "2020-01-01 00:00")
    drilled = [archive("db", "app", "2024-02-10 02:00"), archive("db", "app", "2024-02-05 02:00")]
    store.ctx.catalogue.mark_verified(str(store.repo), drilled)
    keep = {n for n, why in names.items() if why}
    prune = {n for n, why in names.items() if not why}
    assert len(keep) == 12 and len(prune) == 5

    outcome = run_maintenance(store.ctx, "prune", HOST, "test")

    assert outcome.status == RunStatus.WARNING, outcome
    assert store.names() == keep | set(FOREIGN)
    rows = store.rows()
    assert {n for n, a in rows.items() if a.pruned_at is not None} == prune
    row = store.run_row(outcome.run_id)
    assert row.status == "warning" and row.finished_at is not None
    assert row.summary is not None
    assert row.summary.startswith("kept 12, pruned 5 of 17 archives in 3 series")
    assert "daily 3" in row.summary and "verified 1" in row.summary
    assert row.error is not None and all(f in row.error for f in FOREIGN)
    [alert] = store.ctx.catalogue.alerts()
    assert alert.kind == "prune_warning" and alert.host == HOST and FOREIGN[0] in alert.message

    # the repository already satisfies the policy: a second run deletes nothing
    again = run_maintenance(store.ctx, "prune", HOST, "test")
    assert again.summary is not None and again.summary.startswith("kept 12, pruned 0")
    assert store.names() == keep | set(FOREIGN)

    before = segments_size(store.repo)
    compacted = run_maintenance(store.ctx, "compact", HOST, "test")
    assert compacted.status == RunStatus.SUCCEEDED, compacted
    freed = before - segments_size(store.repo)
    assert freed >= 5 * 65536  # the pruned archives' own random payloads
    assert compacted.summary is not None and compacted.summary.startswith(f"freed {freed} bytes")
    assert store.names() == keep | set(FOREIGN)


def test_check_reads_archives_back_in_rotation(store: Store) -> None:
    a = store.add("db", "app", "2024-03-01 02:00")
    b = store.add("db", "app", "2024-03-02 02:00")
    c = store.add("db", "app", "2024-03-03 02:00")
    # a catalogue row whose archive is gone: reported, never chosen
    ghost = archive("db", "app", "2024-02-01 02:00")
    source_id = store.ctx.catalogue.ensure_source(HOST, "127.0.0.1", "db", "directory")
    store.ctx.catalogue.add_archive(
        run_id=None,
        source_id=source_id,
        repository=str(store.repo),
        name=ghost,
        item="app",
        filename="data/",
        created_at=at("2024-02-01 02:00"),
        nbytes=1,
        sha256="0" * 64,
    )

    first = run_maintenance(store.ctx, "check", HOST, "test")
    assert first.status == RunStatus.WARNING, first
    assert first.error is not None and "1 archive(s) in the catalogue are missing" in first.error
    rows = store.rows()
    assert {n for n, r in rows.items() if r.data_checked_at} == {a, b}  # oldest first
    assert first.summary is not None and "read back 2 archive(s)" in first.summary
    assert first.summary.endswith(f"({a}, {b}); 1 never read back yet")

    second = run_maintenance(store.ctx, "check", HOST, "test")
    rows = store.rows()
    assert {n for n, r in rows.items() if r.data_checked_at} == {a, b, c}
    checked = {n: r.data_checked_at for n, r in rows.items() if r.data_checked_at}
    assert second.summary is not None
    assert "read back 2 archive(s) in " in second.summary
    assert f"({c}, {a}); 0 never read back yet" in second.summary  # never read, then a
    assert checked[a] > checked[b] and checked[c] > checked[b]
    assert rows[ghost].data_checked_at is None


def test_a_corrupted_repository_fails_the_check_and_alerts(store: Store) -> None:
    store.add("db", "app", "2024-03-01 02:00")
    store.add("db", "app", "2024-03-02 02:00")
    segment = max(
        (p for p in (store.repo / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )
    with segment.open("r+b") as f:
        f.seek(segment.stat().st_size // 2)
        chunk = f.read(32)
        f.seek(segment.stat().st_size // 2)
        f.write(bytes(x ^ 0xFF for x in chunk))

    outcome = run_maintenance(store.ctx, "check", HOST, "test")

    assert outcome.status == RunStatus.FAILED and not outcome.ok
    row = store.run_row(outcome.run_id)
    assert row.status == "failed" and row.finished_at is not None
    assert row.error is not None
    assert row.error.startswith(f"{HOST}: check: borg check --repository-only failed (exit 1)")
    assert "checksum mismatch" in row.error
    [alert] = store.ctx.catalogue.alerts()
    assert alert.kind == "check_failed" and alert.message == row.error
    assert not any(r.data_checked_at for r in store.rows().values())


def tamper_biggest_object(segment: Path) -> None:
    """Change one byte inside the biggest object of a segment file and fix the entry's CRC,
    as a disk returning wrong data or an attacker would: the repository check cannot see it.

    A segment is b"BORG_SEG", then entries: crc32 (4), size (4), tag (1, PUT = 0), id (32),
    data; the crc covers everything after itself.
    """
    data = bytearray(segment.read_bytes())
    pos, biggest = 8, (0, 0)
    while pos < len(data):
        _crc, size, tag = struct.unpack_from("<IIB", data, pos)
        if tag == 0 and size > biggest[1]:
            biggest = (pos, size)
        pos += size
    start, size = biggest
    assert size > 60000, "expected the 64 KiB payload in this segment"
    data[start + 41 + size // 2] ^= 0xFF
    struct.pack_into("<I", data, start, zlib.crc32(data[start + 4 : start + size]))
    segment.write_bytes(data)


def test_a_tampered_chunk_passes_the_repository_check_but_not_the_read_back(
    store: Store,
) -> None:
    older = store.add("db", "app", "2024-03-01 02:00")
    newer = store.add("db", "app", "2024-03-02 02:00")
    segments = sorted(
        (p for p in (store.repo / "data").rglob("*") if p.name.isdigit()), key=lambda p: int(p.name)
    )
    [newest_payload] = [p for p in segments if p.stat().st_size > 60000][-1:]
    tamper_biggest_object(newest_payload)
    store.borg("check", "--repository-only", str(store.repo))  # CRCs and index: all fine

    outcome = run_maintenance(store.ctx, "check", HOST, "test")

    assert outcome.status == RunStatus.FAILED, outcome
    assert outcome.error is not None
    assert outcome.error.startswith(f"{HOST}: check: archive {newer}: borg extract --dry-run")
    assert outcome.error.endswith("IntegrityError: MAC Authentication failed")
    rows = store.rows()
    assert rows[older].data_checked_at is not None  # read back first, and good
    assert rows[newer].data_checked_at is None
    assert [a.kind for a in store.ctx.catalogue.alerts()] == ["check_failed"]


def test_catalogue_copy_is_a_valid_sqlite_database_in_the_store(
    store: Store, tmp_path: Path
) -> None:
    store.add("db", "app", "2024-03-01 02:00")
    run_maintenance(store.ctx, "prune", HOST, "test")

    outcome = run_maintenance(store.ctx, "catalogue", None, "test")

    assert outcome.status == RunStatus.SUCCEEDED, outcome
    repo = store.ctx.config.store.path / "_catalogue"
    [name] = store.names(repo)
    assert name.startswith("catalogue.") and name.endswith("Z")
    assert outcome.summary is not None and outcome.summary.startswith(f"_catalogue::{name}: ")
    out = tmp_path / "extracted"
    out.mkdir()
    env = {
        **os.environ,
        "BORG_PASSCOMMAND": f"cat {store.root / 'passphrase'}",
        "BORG_BASE_DIR": str(store.root / "borg-test"),
    }
    subprocess.run([str(BORG), "extract", f"{repo}::{name}"], cwd=out, env=env, check=True)
    with sqlite3.connect(out / "catalogue.db") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        runs = db.execute("SELECT job, status FROM maintenance_runs ORDER BY id").fetchall()
        archives = db.execute("SELECT name FROM archives").fetchall()
    assert {"runs", "archives", "maintenance_runs", "alert_events"} <= tables
    assert runs == [("prune", "succeeded"), ("catalogue", "running")]  # copied mid-run
    assert archives == [(archive("db", "app", "2024-03-01 02:00"),)]
    assert not list(store.ctx.config.state_dir.glob("catalogue-copy-*"))  # temp copy removed
    info = json.loads(store.borg("info", "--json", f"{repo}::{name}"))
    meta = json.loads(info["archives"][0]["comment"])
    assert meta["kind"] == "catalogue" and meta["tables"]["archives"] == 1


def test_a_catalogue_in_another_database_is_a_warning_not_a_crash(store: Store) -> None:
    config = store.ctx.config.model_copy(update={"catalogue_url": "postgresql://u@db/backupd"})
    env = MaintenanceEnv(config, store.ctx.borg, store.ctx.catalogue, None, None)
    result = maintenance_registry()["catalogue"].run(env)
    assert result.summary == "not copied: the catalogue is not SQLite"
    [warning] = result.warnings
    assert "postgresql" in warning and "own tools" in warning
    assert not (config.store.path / "_catalogue").exists()


def test_a_host_without_a_repository_is_skipped_and_jobs_are_planned(store: Store) -> None:
    outcome = run_maintenance(store.ctx, "prune", HOST, "test")
    assert outcome.status == RunStatus.SUCCEEDED
    assert outcome.summary is not None and outcome.summary.startswith("no repository yet")
    assert not store.repo.exists()
    assert jobs_for(store.ctx) == [
        ("catalogue", None),
        ("check", HOST),
        ("compact", HOST),
        ("drill", HOST),
        ("prune", HOST),
        ("report", None),
    ]


def backupctl(store: Store, *args: str) -> subprocess.CompletedProcess[str]:
    config = str(store.ctx.config.path)
    return subprocess.run(
        [str(Path(sys.executable).parent / "backupctl"), "--config", config, *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_maintenance_by_hand_and_how_each_job_stands(store: Store) -> None:
    """A check failed on a damaged segment: `maintenance status` shows it, with why, and
    exits 1; once the repository is mended (here: made anew), `maintenance run check HOST`
    runs it now, not at its next firing, and the status is clear again (found by a
    new-user trial: nothing short of the schedule could clear a failed job)."""
    store.add("db", "app", "2024-03-01 02:00")
    segment = max((p for p in (store.repo / "data").rglob("*") if p.is_file()), key=os.path.getsize)
    with segment.open("r+b") as f:
        f.seek(segment.stat().st_size // 2)
        f.write(b"\xff" * 32)
    failed = backupctl(store, "maintenance", "run", "check", HOST)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert f"{HOST}: check: borg check --repository-only failed" in failed.stderr

    standing = backupctl(store, "maintenance", "status")
    assert standing.returncode == 1, standing.stderr
    lines = standing.stdout.splitlines()
    assert lines[0].split() == ["JOB", "FOR", "LAST", "RUN", "ENDED", "LAST", "GOOD"]
    [check] = [line for line in lines if line.startswith("check ")]
    assert check.split()[1:3] == [HOST, "failed"] and check.endswith("never")
    assert any(line.startswith(f"  ! check {HOST}: borg check --repository-only") for line in lines)
    assert any(line.startswith("prune ") and "never run" in line for line in lines)

    shutil.rmtree(store.repo)  # mended: a new repository in its place
    store.add("db", "app", "2024-03-02 02:00", record=False)
    passed = backupctl(store, "maintenance", "run", "check", HOST)
    assert passed.returncode == 0, passed.stderr
    # a warning, with why: the archive the catalogue lists went with the old repository
    assert passed.stdout.startswith(f"check {HOST}: warning: repository ok "), passed.stdout
    assert "(" in passed.stdout.split("never read back yet", 1)[1], passed.stdout
    standing = backupctl(store, "maintenance", "status")
    assert standing.returncode == 0, standing.stdout  # a warning is no failure
    assert f"  ! check {HOST}: " in standing.stdout

    # mistakes are one line and exit 2
    for args, said in (
        (("run", "chek"), "no maintenance job 'chek' in this configuration (jobs: "),
        (("run", "check", "web9"), "unknown host 'web9'"),
        (("run", "catalogue", HOST), "catalogue is a job of the whole store: give no host"),
    ):
        wrong = backupctl(store, "maintenance", *args)
        assert wrong.returncode == 2 and said in wrong.stderr, wrong.stderr
        assert len(wrong.stderr.strip().splitlines()) == 1
