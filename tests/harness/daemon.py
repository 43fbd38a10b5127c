"""The real ``backupd`` daemon as a process under test, and a stand-in sqlite3 that tests
can slow down or hold mid-dump from outside."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backupd.actions.context import Context
from backupd.local.procfs import kill_tree
from jobs.registry import load_config
from tests.harness.droplet import Droplet
from tests.harness.fleet import HostSpec, Value, write_fleet_config, write_passphrase
from tests.harness.procs import processes_naming

BIN = Path(sys.executable).parent

GATED_SQLITE3 = """#!/bin/sh
# Stand-in for sqlite3 on the droplet: announces each dump, waits while the test holds the
# gate, sleeps for the delay the test set, then runs the real sqlite3.
marks={marks}
case "$*" in *".backup"*|*"VACUUM INTO"*)
  touch "$marks/started.$$"
  while [ -e "$marks/hold" ]; do sleep 0.1; done
  [ -s "$marks/delay" ] && sleep "$(cat "$marks/delay")"
  ;;
esac
exec /usr/bin/sqlite3 "$@"
"""


@dataclass
class Gate:
    """Controls the stand-in sqlite3 from the test."""

    marks: Path
    script: Path

    def hold(self) -> None:
        (self.marks / "hold").touch()

    def release(self) -> None:
        (self.marks / "hold").unlink(missing_ok=True)

    def delay(self, seconds: float) -> None:
        (self.marks / "delay").write_text(f"{seconds}\n")

    def started(self) -> int:
        return len(list(self.marks.glob("started.*")))


def make_gate(root: Path) -> Gate:
    marks = root / "gate"
    marks.mkdir(mode=0o777, exist_ok=True)
    marks.chmod(0o777)  # the droplet's user writes its marks here
    script = root / "gated-sqlite3"
    script.write_text(GATED_SQLITE3.format(marks=marks))
    script.chmod(0o755)
    return Gate(marks, script)


def make_sqlite_db(path: Path, rows: int = 100) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
        db.executemany("INSERT INTO notes (body) VALUES (?)", [(f"n{i}",) for i in range(rows)])
    path.chmod(0o644)
    return path


@dataclass
class DaemonProc:
    config: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)

    def start(self) -> DaemonProc:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [str(BIN / "backupd"), "--config", str(self.config), *self.extra_args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Teardown: whatever state the test left, nothing of ours keeps running."""
        if self.proc is not None and self.proc.poll() is None:
            kill_tree(self.proc.pid)
            self.proc.wait(timeout=30)


def wait_for(
    what: str,
    predicate: Callable[[], Any],
    timeout: float = 90,
    daemon: DaemonProc | None = None,
    failing: Callable[[], Any] | None = None,
) -> Any:
    """Poll until ``predicate`` is truthy; on timeout say what (``failing()``: the evidence)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if daemon is not None and not daemon.alive():
            raise AssertionError(f"backupd exited while waiting for {what}:\n{daemon.log()}")
        time.sleep(0.2)
    tail = daemon.log()[-4000:] if daemon is not None else ""
    evidence = f"\n{failing()}" if failing is not None else ""
    raise AssertionError(f"timed out waiting for {what}{evidence}\n{tail}")


NEVER = "0 0 1 1 *"  # so only catch-ups and explicit schedules fire during a test


class Fleet:
    def __init__(self, root: Path, droplet: Droplet) -> None:
        self.root, self.droplet = root, droplet
        self.config = root / "backupd.toml"
        self.state = root / "state"
        self.store = root / "store"
        self.passphrase = write_passphrase(root / "passphrase")
        self.gate: Gate = make_gate(root)
        self.daemons: list[DaemonProc] = []

    def source(self, db: str, **extra: Value) -> dict[str, Value]:
        path = make_sqlite_db(self.root / f"{db}.db")
        return {"kind": "sqlite", "path": str(path), "sqlite3": str(self.gate.script), **extra}

    def write(
        self,
        hosts: dict[str, dict[str, dict[str, Value]]],
        daemon: str = "",
        host_overrides: dict[str, HostSpec] | None = None,
    ) -> None:
        specs = [HostSpec(name, self.droplet, sources) for name, sources in hosts.items()]
        specs += list((host_overrides or {}).values())
        write_fleet_config(
            self.config,
            state_dir=self.state,
            store=self.store,
            passphrase_file=self.passphrase,
            hosts=specs,
            extra=f"[daemon]\n{daemon}",
        )

    def start(self) -> DaemonProc:
        d = DaemonProc(self.config, self.root / f"backupd-{len(self.daemons)}.log").start()
        self.daemons.append(d)
        return d

    def runs(self) -> list[dict[str, Any]]:
        db = self.state / "catalogue.db"
        if not db.exists():
            return []
        with sqlite3.connect(db) as c:
            c.row_factory = sqlite3.Row
            if not c.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs'").fetchone():
                return []  # the daemon is still creating the schema
            rows = c.execute(
                "SELECT runs.id, hosts.name AS host, sources.name AS source, status, trigger,"
                " started_at, finished_at, error FROM runs JOIN sources ON runs.source_id ="
                " sources.id JOIN hosts ON sources.host_id = hosts.id ORDER BY runs.id"
            ).fetchall()
        return [dict(r) for r in rows]

    def finished(self, host: str, source: str, status: str = "succeeded") -> list[dict[str, Any]]:
        return [
            r
            for r in self.runs()
            if (r["host"], r["source"], r["status"]) == (host, source, status)
        ]

    def archives(self, host: str) -> list[str]:
        ctx = Context(load_config(self.config))
        repo = ctx.repository(host)
        if not ctx.borg.is_repository(repo):
            return []
        return [a.name for a in ctx.borg.list_archives(repo, checkpoints=True)]

    def leftovers_on_droplet(self) -> list[str]:
        return [c for c in self.leftovers() if "gated-sqlite3" in c]

    def leftovers(self) -> list[str]:
        """Processes still running that belong to this test's store or state."""
        return processes_naming(str(self.root))
