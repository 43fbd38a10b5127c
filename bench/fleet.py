"""fleet_*: a week of nights of a small fleet, backupd pulling vs borgmatic pushing locally.

Three droplets (real sshd on loopback), data of the sizes issue 14 measured:
- ``db``: PostgreSQL, databases ``lms`` (~100 MB dump) and ``forum`` (~60 MB), and the
  cluster's globals;
- ``maria``: MariaDB, database ``shop`` (~40 MB dump);
- ``files``: a 120 MB tree with a sparse file in it, a ~940 MB tree of up to 50,000 files
  (both real files: copies of this machine's /usr), a SQLite database.
Before every night but the first, one day of changes: a learning platform's day on both
PostgreSQL databases (bench/workloads.py), the MariaDB and SQLite day of bench/chunkers.py,
1 % of the files edited, 50 added and 10 deleted in each tree.

backupd: ``backupd --once`` (``[daemon] workers = 2``) pulls over SSH into one repository
per host. borgmatic 2.1 (bench/venv.py, the baseline) pushes the same data locally: one
config and repository per droplet, its own defaults for the dumps, the same compression
(``auto,zstd,3``) and the same borg. Nights alternate which tool goes first, so neither
always reads a cache the other warmed.

Figures: ``fleet_night_ratio_vs_borgmatic`` (median over nights 2-7 of backupd's night /
borgmatic's), ``fleet_store_ratio_vs_borgmatic`` (repository bytes after 7 nights),
``fleet_growth_ratio_vs_borgmatic`` (bytes added by nights 2-7), ``mirror_bytes_ratio``
(the blocks backupd's tree mirrors take / the blocks the trees take on the droplet; the
hash caches kept beside the mirrors are shown apart).
``BENCH_FLEET_SCALE`` (default 1) scales the trees.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from statistics import median
from typing import Any

from bench.chunkers import _mariadb, _sqlite
from bench.venv import bench_venv
from bench.workloads import du, lms_day, seed_lms
from tests.harness.droplet import start_droplet
from tests.harness.fleet import HostSpec, Value, write_fleet_config, write_passphrase
from tests.harness.mariadb import start_mariadb
from tests.harness.postgres import PostgresCluster, postgres_bindir, start_postgres

NIGHTS = 7
SCALE = float(os.environ.get("BENCH_FLEET_SCALE", 1.0))
COMPRESSION = "auto,zstd,3"


class FleetBench:
    def __init__(self, work: Path, bin_dir: Path) -> None:
        self.work, self.bin_dir = work / "fleet", bin_dir
        self.work.mkdir()
        self.work.chmod(0o755)  # the droplets' login user reads the data under here
        self.venv = bench_venv()
        self.passphrase = write_passphrase(self.work / "passphrase")
        self.stopping: list[Callable[[], None]] = []

    # -- the fleet ----------------------------------------------------------------------
    def start(self) -> None:
        self.pg = self._keep(start_postgres(self.work))
        self.maria = self._keep(start_mariadb(self.work))
        self.droplets = {
            n: self._keep(start_droplet(self.work, n)) for n in ("db", "maria", "files")
        }
        self.data = self.work / "data"
        self.data.mkdir()
        for db in ("lms", "forum"):
            seed_pg(self.pg, db)
        self.maria_seed, self.maria_dump, maria_days = _mariadb(self.maria, db="shop")
        self.maria_seed()
        self.maria_day = maria_days["lms"]
        sqlite_seed, _, sqlite_days = _sqlite(self.data / "app.sqlite")
        sqlite_seed()
        self.sqlite_day = sqlite_days["lms"]
        self.small = make_files(self.data / "small", int(120e6 * SCALE), int(4_000 * SCALE))
        make_sparse(self.small / "disk.img", 512 << 20, 2 << 20)
        big = (int(940e6 * SCALE), int(50_000 * SCALE))
        self.big = make_files(self.data / "big", *big, skip=int(4_000 * SCALE))
        subprocess.run(
            ["chown", "-R", f"{self.droplets['files'].user}:", str(self.data)], check=True
        )

    def _keep(self, server: Any) -> Any:
        self.stopping.append(server.stop)
        return server

    def stop(self) -> None:
        for stop in reversed(self.stopping):
            stop()

    def day(self, night: int) -> None:
        for db in ("lms", "forum"):
            lms_day(self.pg, night, db=db)
        self.maria_day(night)
        self.sqlite_day(night)
        for tree in (self.small, self.big):
            churn_files(tree, night)
        subprocess.run(
            ["chown", "-R", f"{self.droplets['files'].user}:", str(self.data)], check=True
        )

    # -- backupd ------------------------------------------------------------------------
    def backupd_config(self) -> Path:
        pg: dict[str, Value] = {
            "kind": "postgresql",
            "databases": ["lms", "forum"],
            "socket_dir": str(self.pg.socket_dir),
            "port": self.pg.port,
            "username": self.pg.superuser,
        }
        maria: dict[str, Value] = {
            "kind": "mariadb",
            "databases": ["shop"],
            "socket": str(self.maria.socket),
            "username": "root",
        }
        files: dict[str, Mapping[str, Value]] = {
            "small": {"kind": "directory", "path": str(self.small)},
            "big": {"kind": "directory", "path": str(self.big)},
            "app": {"kind": "sqlite", "path": str(self.data / "app.sqlite")},
        }
        d = self.droplets
        return write_fleet_config(
            self.work / "backupd.toml",
            state_dir=self.work / "state",
            store=self.work / "store",
            passphrase_file=self.passphrase,
            hosts=[
                HostSpec("db", d["db"], {"pg": pg}),
                HostSpec("maria", d["maria"], {"shop": maria}),
                HostSpec("files", d["files"], files),
            ],
            extra="[daemon]\nworkers = 2\n",
            borg=self.venv / "borg",
        )

    def backupd_night(self, config: Path) -> float:
        start = time.monotonic()
        loud([str(self.bin_dir / "backupd"), "--config", str(config), "--once"])
        return time.monotonic() - start

    # -- borgmatic ----------------------------------------------------------------------
    def borgmatic_configs(self) -> Path:
        folder = self.work / "borgmatic"
        folder.mkdir()
        common = (
            f"encryption_passcommand: cat {self.passphrase}\n"
            f"compression: {COMPRESSION}\n"
            f"local_path: {self.venv / 'borg'}\n"
            f"borg_base_directory: {self.work / 'borgmatic-base'}\n"
        )
        # the cluster's socket comes from PGHOST (borgmatic's hostname names a dump's
        # folder, and a socket directory there is an absolute path it cannot join)
        pg = "".join(
            f"  - name: {db}\n    username: postgres\n"
            f"    pg_dump_command: {postgres_bindir() / 'pg_dump'}\n"
            for db in ("lms", "forum")
        )
        configs = {
            "db": f"postgresql_databases:\n{pg}",
            "maria": (
                "mariadb_databases:\n"
                f"  - name: shop\n    socket_path: {self.maria.socket}\n    username: root\n"
            ),
            "files": (
                f"source_directories:\n  - {self.small}\n  - {self.big}\n"
                f"sqlite_databases:\n  - name: app\n    path: {self.data / 'app.sqlite'}\n"
            ),
        }
        for name, body in configs.items():
            repo = self.work / "borgmatic-repos" / name
            text = (
                f"repositories:\n  - path: {repo}\n    encryption: repokey-blake2\n" + common + body
            )
            (folder / f"{name}.yaml").write_text(text)
        (self.work / "borgmatic-repos").mkdir()
        self.borgmatic(folder, "repo-create")
        return folder

    def borgmatic(self, folder: Path, *action: str) -> float:
        start = time.monotonic()
        loud(
            [str(self.venv / "borgmatic"), "--config", str(folder), *action],
            env={
                **os.environ,
                "PATH": f"{self.venv}:{os.environ['PATH']}",
                "PGHOST": str(self.pg.socket_dir),
                "PGPORT": str(self.pg.port),
            },
        )
        return time.monotonic() - start

    # -- the week -----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.start()
        try:
            return self.week()
        finally:
            self.stop()

    def week(self) -> dict[str, Any]:
        config = self.backupd_config()
        folder = self.borgmatic_configs()
        nights: list[dict[str, float]] = []
        for night in range(NIGHTS):
            if night:
                self.day(night)
            tools: list[tuple[str, Callable[[], float]]] = [
                ("backupd", lambda: self.backupd_night(config)),
                ("borgmatic", lambda: self.borgmatic(folder, "create")),
            ]
            if night % 2:
                tools.reverse()
            seconds = {name: go() for name, go in tools}
            nights.append(
                {
                    **seconds,
                    "backupd_bytes": du(self.work / "store"),
                    "borgmatic_bytes": du(self.work / "borgmatic-repos"),
                }
            )
            print(f"bench: fleet night {night + 1}: {nights[-1]}", flush=True)
        later = nights[1:]
        b, m = nights[-1], nights[0]
        grown_b = b["backupd_bytes"] - m["backupd_bytes"]
        grown_m = b["borgmatic_bytes"] - m["borgmatic_bytes"]
        trees = blocks(self.small) + blocks(self.big)
        kept = self.work / "state" / "mirrors"
        mirrors = sum(blocks(data) for data in kept.glob("files/*/*/data"))
        overhead = blocks(kept) - mirrors  # the per-tree hash caches
        return {
            "fleet_night_ratio_vs_borgmatic": round(
                median(n["backupd"] / n["borgmatic"] for n in later), 3
            ),
            "fleet_store_ratio_vs_borgmatic": round(b["backupd_bytes"] / b["borgmatic_bytes"], 3),
            "fleet_growth_ratio_vs_borgmatic": round(grown_b / grown_m, 3),
            "mirror_bytes_ratio": round(mirrors / trees, 3),
            "fleet_nights": nights,
            "fleet_growth_per_night": {"backupd": grown_b // 6, "borgmatic": grown_m // 6},
            "fleet_tree_blocks": trees,
            "fleet_mirror_blocks": mirrors,
            "fleet_mirror_overhead_bytes": overhead,
        }


# -- data ------------------------------------------------------------------------------
def seed_pg(pg: PostgresCluster, db: str) -> None:
    """lms: the learning platform of bench/workloads.py (~100 MB dump); forum: the same
    shape, smaller (~60 MB)."""
    seed_lms(pg, db=db, scale=5 if db == "lms" else 2, posts=150_000 if db == "lms" else 100_000)


def make_files(root: Path, total: int, files: int, skip: int = 0) -> Path:
    """A tree of real files: regular files of this machine's /usr (documentation, locales,
    libraries, scripts, icons), in a fixed order, copied until ``files`` files or ``total``
    bytes; the first ``skip`` are passed over (two trees hold different files)."""
    picked = taken = 0
    for i, source in enumerate(real_files()):
        if i < skip:
            continue
        if picked >= files or taken >= total:
            break
        path = root / f"d{picked % 100:02d}" / f"f{picked:05d}-{source.name}"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)
        picked += 1
        taken += path.stat().st_size
    return root


def real_files() -> Iterator[Path]:
    """Regular files under /usr/share and /usr/lib, smaller than 20 MB, sorted by path."""
    for top in ("/usr/share", "/usr/lib"):
        for folder, dirs, names in os.walk(top):
            dirs.sort()
            for name in sorted(names):
                path = Path(folder) / name
                try:
                    st = path.lstat()
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and 0 < st.st_size < 20_000_000:
                    yield path


def make_sparse(path: Path, size: int, data: int) -> None:
    """A disk image: ``size`` bytes apparent, ``data`` bytes written in four places."""
    with open(path, "wb") as f:
        f.truncate(size)
        for k in range(4):
            f.seek(k * (size // 4))
            f.write(os.urandom(data // 4))


def churn_files(root: Path, night: int) -> None:
    """A day of uploads: 1 % of the files edited, 50 files added, 10 deleted."""
    rng = random.Random(night)
    paths = sorted(p for p in root.rglob("f*") if p.is_file())
    for path in rng.sample(paths, max(1, len(paths) // 100)):
        with open(path, "r+b") as f:
            f.seek(path.stat().st_size // 2)
            f.write(os.urandom(4096))
    for path in rng.sample(paths, 10):
        path.unlink()
    for k in range(50):
        (root / f"d{k:02d}" / f"new-{night}-{k}.bin").write_bytes(os.urandom(20_000))


def loud(argv: list[str], env: dict[str, str] | None = None) -> None:
    """Run a tool; if it fails, stop the bench with what it said."""
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        said = (result.stdout + result.stderr)[-3000:]
        raise RuntimeError(f"{argv[0]} exited {result.returncode}:\n{said}")


def blocks(path: Path) -> int:
    """Bytes the files under ``path`` take on disk (allocated blocks: holes are free)."""
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def run(work: Path, bin_dir: Path) -> dict[str, Any]:
    return FleetBench(work, bin_dir).run()
