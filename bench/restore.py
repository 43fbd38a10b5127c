"""restore_ratio_vs_hand: ``backupctl restore HOST/SOURCE --into-db TARGET --as NEW`` of a
~1 GB PostgreSQL dump vs the same restore by hand, in the same run:

    psql -c 'CREATE DATABASE new'
    borg extract --stdout REPO::ARCHIVE FILE | pg_restore --exit-on-error \
        --single-transaction --no-owner --no-privileges -d new

backupctl's wall time includes everything it does around that: start-up, the plan (does
the database exist?), CREATE DATABASE, the sha256 of the stream as it passes through
Python, and the row-count check against the facts recorded at backup time. The two sides
alternate (which goes first swaps every round), the restored databases are dropped before
each round, and each side's best round counts. Pieces of the difference are measured on
their own: the row-count check, a ``--dry-run`` (start-up and plan), and the stream with
no database behind it (``borg extract`` to /dev/null, through a shell pipe, through
backupd's Python pipe with its sha256).

BENCH_RESTORE_BYTES=100000000 makes the dump ~100 MB for a quick try;
BENCH_RESTORE_ROUNDS sets the rounds (default 3).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.venv import bench_venv
from bench.workloads import seed_restore_db
from tests.harness.droplet import Droplet
from tests.harness.fleet import HostSpec, Value, toml_value
from tests.harness.postgres import PostgresCluster

if TYPE_CHECKING:
    from bench.run import Bench

BIN = Path(sys.executable).parent
BORG = bench_venv() / "borg"  # as the restore by backupd uses (bench/venv.py)
RESTORE_BYTES = int(os.environ.get("BENCH_RESTORE_BYTES", 1_000_000_000))
ROUNDS = int(os.environ.get("BENCH_RESTORE_ROUNDS", 4))
HOST, SOURCE, TARGET = "db", "big", "staging"
DATABASE, OURS, HAND = "bench_big", "bench_a", "bench_b"
# What backupd passes to pg_restore for --into-db (jobs/postgresql.py restore_argv).
PG_RESTORE_FLAGS = "--exit-on-error --single-transaction --no-owner --no-privileges"


def restore_host(droplet: Droplet, pg: PostgresCluster) -> HostSpec:
    """The droplet again, as host ``db`` whose source ``big`` dumps the bench database."""
    source: dict[str, Value] = {
        "kind": "postgresql",
        "databases": [DATABASE],
        "globals": False,
        "socket_dir": str(pg.socket_dir),
        "port": pg.port,
        "username": "postgres",
    }
    return HostSpec(HOST, droplet, {SOURCE: source})


def restore_target_toml(pg: PostgresCluster) -> str:
    """The ``[restore_targets.staging]`` table: the bench's cluster, on this host."""
    options: dict[str, Value] = {
        "kind": "postgresql",
        "socket_dir": str(pg.socket_dir),
        "port": pg.port,
        "username": "postgres",
    }
    return "\n".join(
        [f"[restore_targets.{TARGET}]", *(f"{k} = {toml_value(v)}" for k, v in options.items())]
    )


@dataclass(frozen=True)
class Dump:
    repository: str
    name: str
    filename: str
    nbytes: int
    tables: list[str]  # the tables whose rows were recorded at backup time


def latest_dump(state_dir: Path) -> Dump:
    with sqlite3.connect(state_dir / "catalogue.db") as db:
        repo, name, filename, nbytes, facts = db.execute(
            "SELECT repository, name, filename, nbytes, facts FROM archives WHERE item = ?"
            " ORDER BY id DESC LIMIT 1",
            (DATABASE,),
        ).fetchone()
    return Dump(repo, name, filename, nbytes, sorted(json.loads(facts).get("rows", {})))


class RestoreBench:
    def __init__(self, bench: Bench) -> None:
        self.bench, self.pg = bench, bench.pg
        self.conn = f"-h {shlex.quote(str(self.pg.socket_dir))} -p {self.pg.port} -U postgres"
        self.dump = Dump("", "", "", 0, [])

    def sh(self, cmd: str) -> float:
        start = time.monotonic()
        subprocess.run(
            ["bash", "-o", "pipefail", "-c", cmd],
            check=True,
            env=self.bench.borg_env,
            stdout=subprocess.DEVNULL,
        )
        return time.monotonic() - start

    def drop(self, *names: str) -> None:
        for name in names:
            self.pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.pg.psql("CHECKPOINT")  # the previous round's writes are not left to this one

    def extract(self) -> str:
        d = self.dump
        return (
            f"{BORG} extract --stdout {shlex.quote(f'{d.repository}::{d.name}')} "
            f"{shlex.quote(d.filename)}"
        )

    def ours(self) -> tuple[float, float]:
        """backupctl restore: wall seconds, and the seconds it reports for its own work."""
        start = time.monotonic()
        out = subprocess.run(
            [
                str(BIN / "backupctl"),
                "--config",
                str(self.bench.config),
                "restore",
                f"{HOST}/{SOURCE}",
                "--into-db",
                TARGET,
                "--as",
                OURS,
                "--item",
                DATABASE,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        wall = time.monotonic() - start
        reported = re.search(r"bytes in ([0-9.]+)s", out)
        if reported is None or "ok  rows:" not in out:
            raise RuntimeError(f"unexpected backupctl restore output:\n{out}")
        return wall, float(reported.group(1))

    def by_hand(self) -> float:
        return self.sh(
            f"psql {self.conn} -XAtq -c 'CREATE DATABASE {HAND}' && "
            f"{self.extract()} | pg_restore {self.conn} {PG_RESTORE_FLAGS} "
            f"-d {HAND}"
        )

    def counts(self, db: str) -> tuple[float, str]:
        """The row-count check backupd runs (one count(*) per recorded table, one psql)."""
        sql = "".join(f"SELECT count(*) FROM {t};\n" for t in self.dump.tables)
        start = time.monotonic()
        out = subprocess.run(
            ["psql", *shlex.split(self.conn), "-XAtq", "-d", db],
            input=sql,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return time.monotonic() - start, out

    def python_pipe(self) -> float:
        """backupd's stream (borg extract -> sha256 in Python -> a pipe) into cat, no DB."""
        from backupd.actions.context import Context
        from backupd.local.process import Invocation, feed_local
        from jobs.registry import load_config

        ctx = Context(load_config(self.bench.config))
        d = self.dump
        digest = hashlib.sha256()

        def produce(sink: Callable[[bytes], object]) -> None:
            def forward(chunk: bytes) -> None:
                digest.update(chunk)
                sink(chunk)

            ctx.borg.extract_stream(Path(d.repository), d.name, d.filename, forward)

        start = time.monotonic()
        result = feed_local(("sh", "-c", "cat > /dev/null"), Invocation(), produce)
        seconds = time.monotonic() - start
        if not result.ok or result.fed_bytes != d.nbytes:
            raise RuntimeError(f"python pipe: {result}")
        return seconds

    def run(self) -> dict[str, Any]:
        rows = seed_restore_db(self.pg, DATABASE, RESTORE_BYTES)
        self.bench.backupctl("backup", "now", f"{HOST}/{SOURCE}")
        self.dump = latest_dump(self.bench.work / "state")
        pipes: dict[str, list[float]] = {
            "borg_to_devnull": [],
            "borg_pipe_cat": [],
            "backupd_pipe_cat": [],
        }
        for _ in range(2):  # also warms the page cache and borg's security dir for both sides
            pipes["borg_to_devnull"].append(self.sh(f"{self.extract()} > /dev/null"))
            pipes["borg_pipe_cat"].append(self.sh(f"{self.extract()} | cat > /dev/null"))
            pipes["backupd_pipe_cat"].append(self.python_pipe())
        dry = min(
            self.sh(
                f"{BIN / 'backupctl'} --config {self.bench.config} restore {HOST}/{SOURCE} "
                f"--into-db {TARGET} --as {OURS} --item {DATABASE} --dry-run"
            )
            for _ in range(3)
        )
        times: dict[str, list[float]] = {"backupctl": [], "by_hand": []}
        reported: list[float] = []
        verify: list[float] = []
        for r in range(ROUNDS):
            self.drop(OURS, HAND)
            for side in ("backupctl", "by_hand") if r % 2 == 0 else ("by_hand", "backupctl"):
                # each side starts from a clean checkpoint and an empty write-back queue,
                # not from the other side's 1.4 GB still being flushed
                self.pg.psql("CHECKPOINT")
                os.sync()
                if side == "backupctl":
                    wall, own = self.ours()
                    times[side].append(wall)
                    reported.append(own)
                    verify.append(self.counts(OURS)[0])
                else:
                    times[side].append(self.by_hand())
            print(
                f"  round {r + 1}: backupctl {times['backupctl'][-1]:.2f} s, "
                f"by hand {times['by_hand'][-1]:.2f} s",
                flush=True,
            )
        if self.counts(OURS)[1] != self.counts(HAND)[1]:
            raise RuntimeError("the two restored databases differ in row counts")
        db_bytes = int(self.pg.psql(f"SELECT pg_database_size('{OURS}')"))
        self.drop(OURS, HAND, DATABASE)
        best = {k: min(v) for k, v in times.items()}
        fastest = {k: min(v) for k, v in pipes.items()}
        return {
            "restore_ratio_vs_hand": best["backupctl"] / best["by_hand"],
            "restore_ratio_python_pipe_vs_shell_pipe": (
                fastest["backupd_pipe_cat"] / fastest["borg_pipe_cat"]
            ),
            "restore_seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
            "restore_seconds_reported_by_backupctl": [round(x, 2) for x in reported],
            "restore_verify_seconds": [round(x, 2) for x in verify],
            "restore_dry_run_seconds": round(dry, 2),
            "restore_stream_seconds": {k: [round(x, 2) for x in v] for k, v in pipes.items()},
            "restore_dump_bytes": self.dump.nbytes,
            "restore_db_bytes": db_bytes,
            "restore_rows": rows,
        }
