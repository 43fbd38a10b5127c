"""`make bench`: issue 3's figures, each measured against its baseline in the same run.

- pull_ratio_vs_openssh: backupd's pull of a ~1 GB stream (paramiko into a gated
  ``borg create``, backupd/borg/gate.py) vs ``ssh HOST cat FILE | borg create -`` with
  OpenSSH; also vs ``borg create -`` from the local file (this machine's limit).
- archive_fixed_cost_seconds: a 1 KB dump pulled into its own archive over an open
  connection (median), beside ``borg create`` of 1 KB from a local command.
- incremental_bytes_fraction / incremental_time_fraction: a ~2 GB tree, 1 % of its files
  changed, second ``backupctl backup now`` vs the first.
- storage_7day_ratio: repository size after 7 daily backups of a changing PostgreSQL
  database (a learning platform's day: hot rows updated, posts appended), backupd's choice
  (pg_dump -Fc -Z0, Borg auto,zstd,3) vs ``pg_dump -Fc | borg create -`` (borg's default
  lz4); also pg_dump -Fp into Borg, and the same on a uniform-churn day (every page
  changes: the worst case for deduplication).
- restore_ratio_vs_hand: ``backupctl restore --into-db`` of a ~1 GB dump vs
  ``borg extract --stdout | pg_restore`` by hand (bench/restore.py).
- sparse_* / compress_*: a 4 GiB sparse file in a tree (wire, mirror, repository, restore)
  and what rsync's wire compression costs on ordinary files (bench/trees.py).
- chunker_*: 7 nights of each kind's dump under three chunker settings (bench/chunkers.py).
- status_seconds_1m: the status rows over a catalogue of 2,000 sources with 1 M runs and
  1 M archives (bench/catalogue.py); the SQL statements they take, and `backupctl status
  --json` end to end, are shown beside it.
- fleet_*_vs_borgmatic, mirror_bytes_ratio: a week of a 3-droplet fleet, backupd --once
  against borgmatic pushing the same data locally (bench/fleet.py).
- find_seconds_1m: `backupctl find` of one name over a catalogue index of 1 M file
  versions, against a bare count over the same table (bench/find.py).
- daemon_idle_cpu_percent / daemon_idle_rss_mb: the daemon at rest with that fleet's
  config, over a minute (bench/daemon_idle.py).

Writes bench/results/latest.json and prints a table. Not part of `make test`.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backupd.config.load import StoreConfig
from bench.catalogue import run as catalogue_bench
from bench.chunkers import run as chunker_bench
from bench.daemon_idle import run as idle_bench
from bench.find import run as find_bench
from bench.fleet import run as fleet_bench
from bench.gate import GateBench
from bench.restore import RestoreBench, restore_host, restore_target_toml
from bench.trees import TreeBench
from bench.venv import bench_venv
from bench.workloads import (
    churn_day,
    du,
    lms_day,
    make_stream_file,
    make_tree,
    seed_lms,
    touch_one_percent,
)
from tests.harness.droplet import Droplet, start_droplet
from tests.harness.fleet import HostSpec, Value, write_fleet_config, write_passphrase
from tests.harness.postgres import PostgresCluster, postgres_bindir, start_postgres

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# borg as production installs it (bench/venv.py): every figure, backupd's and the baselines'
BORG = bench_venv() / "borg"
RESULTS = ROOT / "bench" / "results"
# Both sides of the pull comparison use the project's compression, so the ratio measures
# the transport; the -Fc baseline keeps borg's default (its data is compressed already).
# BENCH_PULL_BYTES=1000000 shows the fixed cost of a pull (connections, archive comment).
PULL_BYTES = int(os.environ.get("BENCH_PULL_BYTES", 1_000_000_000))
COMPRESSION = StoreConfig.model_fields["compression"].default
GOALS = {
    "pull_ratio_vs_openssh": 1.05,
    "archive_fixed_cost_seconds": 0.25,
    "incremental_bytes_fraction": 0.03,
    "incremental_time_fraction": 0.15,
    "storage_7day_ratio": 1.0,
    "restore_ratio_vs_hand": 1.1,
    "status_seconds_1m": 0.3,
    "daemon_idle_cpu_percent": 0.5,
    "daemon_idle_rss_mb": 100.0,
    "fleet_night_ratio_vs_borgmatic": 1.0,
    "fleet_store_ratio_vs_borgmatic": 0.9,
    "fleet_growth_ratio_vs_borgmatic": 0.6,
    "mirror_bytes_ratio": 1.0,
    "find_seconds_1m": 0.5,
}
# Reported without a goal: other baselines and the worst case, so nobody has to rerun to see them.
INFORMATIVE = (
    "pull_ratio_vs_local_borg",
    "borg_create_1kb_seconds",
    "storage_7day_ratio_plain_vs_Fc",
    "storage_7day_ratio_uniform_churn",
    "restore_ratio_python_pipe_vs_shell_pipe",
    "status_statements_1m",
    "status_cli_seconds_1m",
    "gate_request_ms",
    "gated_night_ratio",
    "find_glob_seconds_1m",
    "find_vs_count_scan_ratio",
    "change_judge_seconds_50k",
)


def timed(fn: Callable[[], object]) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def timed_sh(cmd: str, env: dict[str, str]) -> float:
    start = time.monotonic()
    sh(cmd, env)
    return time.monotonic() - start


def sh(cmd: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], check=True, env=env, stdout=subprocess.DEVNULL
    )


class Bench:
    def __init__(self, work: Path, droplet: Droplet, pg: PostgresCluster) -> None:
        self.work, self.droplet, self.pg = work, droplet, pg
        self.passphrase = write_passphrase(work / "passphrase")
        pg_source: dict[str, Value] = {
            "kind": "postgresql",
            "databases": ["lms"],
            "globals": False,
            "socket_dir": str(pg.socket_dir),
            "port": pg.port,
            "username": "postgres",
            **(
                {"compression": os.environ["BENCH_PG_COMPRESSION"]}
                if "BENCH_PG_COMPRESSION" in os.environ
                else {}
            ),
        }
        self.borg_env = {
            **os.environ,
            "BORG_PASSCOMMAND": f"cat {self.passphrase}",
            "BORG_BASE_DIR": str(work / "borg-base"),
        }
        self.config = write_fleet_config(
            work / "bench.toml",
            state_dir=work / "state",
            store=work / "store",
            passphrase_file=self.passphrase,
            hosts=[
                HostSpec("pull", droplet, {"blob": {"kind": "directory", "path": "/tmp"}}),
                HostSpec(
                    "tree", droplet, {"files": {"kind": "directory", "path": str(work / "tree")}}
                ),
                *(HostSpec(name, droplet, {"lms": pg_source}) for name in ("pg", "pg-churn")),
                restore_host(droplet, pg),
            ],
            extra=restore_target_toml(pg),
            borg=BORG,
        )

    def borg(self, *args: str) -> str:
        return subprocess.run(
            [str(BORG), *args],
            env=self.borg_env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def fresh_repo(self, name: str) -> Path:
        repo = self.work / "repos" / name
        shutil.rmtree(repo, ignore_errors=True)
        repo.parent.mkdir(parents=True, exist_ok=True)
        self.borg("init", "--encryption", "repokey-blake2", str(repo))
        return repo

    def backupctl(self, *args: str) -> None:
        subprocess.run(
            [str(BIN / "backupctl"), "--config", str(self.config), *args],
            check=True,
            capture_output=True,
        )

    # -- 1. streaming pull ------------------------------------------------------------
    def pull(self, rounds: int = 3) -> dict[str, Any]:
        from backupd.actions.context import Context, ssh_target
        from backupd.actions.stream import PullRun, pull_stream
        from backupd.remote.ssh import Connection
        from jobs.base import DumpStream, Held
        from jobs.registry import load_config

        blob = make_stream_file(self.droplet.root / "dump.bin", PULL_BYTES)
        ctx = Context(load_config(self.config))
        host = ctx.config.hosts["pull"]
        source = host.sources["blob"]
        sid = ctx.catalogue.ensure_source("pull", host.address, "blob", "directory")
        stream = DumpStream("blob", "blob.bin", ("cat", str(blob)), tool="cat")
        d = self.droplet
        known = f"UserKnownHostsFile={d.root / 'known_hosts'}"
        ssh = shlex.join(
            [
                "ssh",
                "-F",
                "/dev/null",
                "-p",
                str(d.port),
                "-i",
                str(d.key_path),
                "-o",
                "BatchMode=yes",
                "-o",
                known,
                f"{d.user}@{d.address}",
                f"cat {shlex.quote(str(blob))}",
            ]
        )
        borg = str(BORG)
        times: dict[str, list[float]] = {"backupd": [], "openssh": [], "local": []}
        for r in range(rounds):
            repo = ctx.repository("pull")
            shutil.rmtree(repo, ignore_errors=True)
            ctx.borg.ensure_repository(repo, "repokey-blake2")
            run_id = ctx.catalogue.start_run(sid, "bench")
            start = time.monotonic()  # the night's connection is part of the pull
            with Connection(ssh_target(host, ctx.config.state_dir)) as conn:
                run = PullRun(sid, run_id, ("blob",))
                pull_stream(ctx, host, source, run, 0, stream, repo, Held(), conn)
            times["backupd"].append(time.monotonic() - start)
            repo_o = self.fresh_repo("openssh")
            times["openssh"].append(
                timed_sh(
                    f"{ssh} | {borg} create --compression {COMPRESSION} {repo_o}::r{r} -",
                    self.borg_env,
                )
            )
            repo_l = self.fresh_repo("local")
            times["local"].append(
                timed_sh(
                    f"{borg} create --compression {COMPRESSION} {repo_l}::r{r} - < {blob}",
                    self.borg_env,
                )
            )
        best = {k: min(v) for k, v in times.items()}
        blob.unlink()
        return {
            "pull_ratio_vs_openssh": best["backupd"] / best["openssh"],
            "pull_ratio_vs_local_borg": best["backupd"] / best["local"],
            "pull_seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
            "pull_bytes": PULL_BYTES,
        }

    # -- 1b. the fixed cost of an archive --------------------------------------------------
    def fixed(self, rounds: int = 9) -> dict[str, Any]:
        """A 1 KB dump pulled into its own archive over the night's open connection (what
        every archive costs whatever its size), beside ``borg create`` of 1 KB from a local
        command (what borg alone costs here): medians."""
        from statistics import median

        from backupd.actions.context import Context, ssh_target
        from backupd.actions.stream import PullRun, pull_stream
        from backupd.remote.ssh import Connection
        from jobs.base import DumpStream, Held
        from jobs.registry import load_config

        small = make_stream_file(self.droplet.root / "small.bin", 1000)
        ctx = Context(load_config(self.config))
        host = ctx.config.hosts["pull"]
        source = host.sources["blob"]
        sid = ctx.catalogue.ensure_source("pull", host.address, "blob", "directory")
        stream = DumpStream("small", "small.bin", ("cat", str(small)), tool="cat")
        repo = ctx.repository("pull")
        shutil.rmtree(repo, ignore_errors=True)
        ctx.borg.ensure_repository(repo, "repokey-blake2")
        pulls: list[float] = []
        with Connection(ssh_target(host, ctx.config.state_dir)) as conn:
            for _ in range(rounds):
                run_id = ctx.catalogue.start_run(sid, "bench")
                run = PullRun(sid, run_id, ("small",))
                start = time.monotonic()
                pull_stream(ctx, host, source, run, 0, stream, repo, Held(), conn)
                pulls.append(time.monotonic() - start)
        local_repo = self.fresh_repo("fixed-local")
        env = {**self.borg_env, "BORG_SELFTEST": "disabled"}  # as backupd after its first
        borg = str(BORG)
        local = [
            timed_sh(
                f"{borg} create --compression {COMPRESSION} --content-from-command "
                f"{local_repo}::r{r} -- cat {small}",
                env,
            )
            for r in range(rounds)
        ]
        small.unlink()
        return {
            "archive_fixed_cost_seconds": round(median(pulls), 3),
            "borg_create_1kb_seconds": round(median(local), 3),
            "archive_fixed_cost_all": [round(x, 3) for x in pulls],
        }

    # -- 2. incremental tree ------------------------------------------------------------
    def incremental(self) -> dict[str, Any]:
        tree = make_tree(self.work / "tree", total=2_000_000_000, files=10_000)
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", f"{self.droplet.user}:", str(tree)], check=True)
        first = timed(lambda: self.backupctl("backup", "now", "tree/files"))
        f1 = self.last_facts()
        changed = touch_one_percent(tree)
        second = timed(lambda: self.backupctl("backup", "now", "tree/files"))
        f2 = self.last_facts()
        return {
            "incremental_bytes_fraction": f2["transferred_bytes"] / f1["transferred_bytes"],
            "incremental_time_fraction": second / first,
            "incremental_seconds": {"first": round(first, 2), "second": round(second, 2)},
            "incremental_transferred": {
                "first": f1["transferred_bytes"],
                "second": f2["transferred_bytes"],
            },
            "incremental_tree": {
                "files": f1["files"],
                "bytes": f1["bytes"],
                "changed_files": changed,
            },
        }

    def last_facts(self) -> dict[str, Any]:
        import sqlite3

        with sqlite3.connect(self.work / "state" / "catalogue.db") as db:
            (facts,) = db.execute("SELECT facts FROM archives ORDER BY id DESC LIMIT 1").fetchone()
        return json.loads(facts)  # type: ignore[no-any-return]

    # -- 3. seven days of a changing database ----------------------------------------------
    def storage(self) -> dict[str, Any]:
        lms = self.seven_days("pg", lms_day)
        churn = self.seven_days("pg-churn", churn_day)
        return {
            "storage_7day_ratio": lms["backupd_Fc_Z0"] / lms["pg_dump_Fc"],
            "storage_7day_ratio_plain_vs_Fc": lms["pg_dump_Fp"] / lms["pg_dump_Fc"],
            "storage_7day_ratio_uniform_churn": churn["backupd_Fc_Z0"] / churn["pg_dump_Fc"],
            "storage_7day_bytes": lms,
            "storage_7day_bytes_uniform_churn": churn,
            "storage_db_bytes": int(self.pg.psql("SELECT pg_database_size('lms')")),
        }

    def seven_days(
        self, host: str, work_day: Callable[[PostgresCluster, int], None], days: int = 7
    ) -> dict[str, int]:
        """backupd's PostgreSQL source and the two baselines, once a day for `days` days."""
        seed_lms(self.pg)
        bindir = postgres_bindir()
        conn = f"-h {self.pg.socket_dir} -p {self.pg.port} -U postgres"
        borg = str(BORG)
        repos = {name: self.fresh_repo(f"{host}-{name}") for name in ("fc", "fp")}
        for day in range(days):
            if day:
                work_day(self.pg, day)
            self.backupctl("backup", "now", f"{host}/lms")
            sh(
                f"{bindir}/pg_dump {conn} -Fc lms | {borg} create --compression lz4 "
                f"{repos['fc']}::d{day} -",
                self.borg_env,
            )
            sh(
                f"{bindir}/pg_dump {conn} -Fp lms | {borg} create --compression {COMPRESSION} "
                f"{repos['fp']}::d{day} -",
                self.borg_env,
            )
        return {
            "backupd_Fc_Z0": du(self.work / "store" / host),
            "pg_dump_Fc": du(repos["fc"]),
            "pg_dump_Fp": du(repos["fp"]),
        }


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="backupd-bench-"))
    work.chmod(0o755)
    droplet = pg = None
    started = time.monotonic()
    try:
        droplet = start_droplet(work, "bench-droplet")
        pg = start_postgres(work)
        bench = Bench(work, droplet, pg)
        results: dict[str, Any] = {}
        # the two steps that measure a quiet machine go first: later steps leave
        # PostgreSQL vacuuming and gigabytes being written back for minutes
        steps: dict[str, Callable[[], dict[str, Any]]] = {
            "catalogue": functools.partial(catalogue_bench, work, BIN),
            "find": functools.partial(find_bench, work),
            "idle": functools.partial(idle_bench, work, BIN),
            "pull": bench.pull,
            "fixed": bench.fixed,
            "incremental": bench.incremental,
            "storage": bench.storage,
            "restore": RestoreBench(bench).run,
            "trees": TreeBench(bench).run,
            "chunkers": functools.partial(chunker_bench, bench, work),
            "fleet": functools.partial(fleet_bench, work, BIN),
            "gate": lambda: GateBench(bench).run(),
        }
        for name in sys.argv[1:] or list(steps):
            print(f"bench: {name} ...", flush=True)
            results.update(steps[name]())
    finally:
        for server in (pg, droplet):
            if server is not None:
                server.stop()
        shutil.rmtree(work, ignore_errors=True)
    results["_meta"] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.monotonic() - started, 1),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "goals": GOALS,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'figure':40} {'measured':>10} {'goal':>8}")
    for key, goal in GOALS.items():
        if key not in results:
            continue
        verdict = "ok" if results[key] <= goal else "MISSED"
        print(f"{key:40} {results[key]:10.3f} {goal:8.2f}  {verdict}")
    for key in INFORMATIVE:
        if key in results:
            print(f"{key:40} {results[key]:10.3f} {'-':>8}")
    print(f"\n(written to {RESULTS / 'latest.json'}; {results['_meta']['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
