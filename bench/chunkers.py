"""Borg's chunker per kind of dump: which ``--chunker-params`` keep 7 nights smallest.

Each kind's dump (as backupd takes it) of a learning platform's database, once a night for
7 nights with a day of changes between, into one repository per chunker setting
(``auto,zstd,3`` as backupd stores dumps). The figure is the repository's size after the
7 nights; the realistic day (a hot few percent of rows, posts appended and edited) and the
worst case (every page touched) are both shown. Decision 0020 reads these figures.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.workloads import WORDS, churn_day, du, lms_day, seed_lms
from tests.harness.mariadb import MariaDBServer, start_mariadb
from tests.harness.postgres import PostgresCluster, postgres_bindir

NIGHTS = 7
SETTINGS = {
    "default": "default",  # buzhash,19,23,21,4095: ~2 MiB chunks
    "64k": "buzhash,14,23,16,4095",
    "16k": "buzhash,12,20,14,4095",
}
Dump = Callable[[Path], None]  # writes one night's dump to the path
Day = Callable[[int], None]  # one day of changes (the day's number)


def run(bench: Any, work: Path) -> dict[str, Any]:
    """``bench``: bench.run.Bench (its borg, its PostgreSQL cluster)."""
    maria = start_mariadb(work)
    try:
        kinds = {
            "postgresql": _postgresql(bench.pg),
            "mariadb": _mariadb(maria),
            "sqlite": _sqlite(work / "lms.sqlite"),
        }
        bytes_: dict[str, dict[str, int]] = {}
        for kind, (seed, dump, days) in kinds.items():
            for churn, day in days.items():
                seed()
                bytes_[f"{kind}/{churn}"] = _nights(bench, work, dump, day)
    finally:
        maria.stop()
    result: dict[str, Any] = {"chunker_7night_bytes": bytes_}
    for key, sizes in bytes_.items():
        best = min(sizes, key=lambda k: sizes[k])
        name = key.replace("/", "_")
        result[f"chunker_{name}_best"] = best
        result[f"chunker_{name}_64k_vs_default"] = round(sizes["64k"] / sizes["default"], 3)
    return result


def _nights(bench: Any, work: Path, dump: Dump, day: Day) -> dict[str, int]:
    repos = {name: bench.fresh_repo(f"chunker-{name}") for name in SETTINGS}
    out = work / "night.dump"
    for night in range(NIGHTS):
        if night:
            day(night)
        dump(out)
        for name, params in SETTINGS.items():
            bench.borg(
                "create",
                "--compression",
                "auto,zstd,3",
                "--chunker-params",
                params,
                f"{repos[name]}::n{night}",
                str(out),
            )
    out.unlink()
    sizes = {name: du(repo) for name, repo in repos.items()}
    for repo in repos.values():
        shutil.rmtree(repo)
    return sizes


# -- PostgreSQL: pg_dump -Fc -Z0 (backupd's format) -------------------------------------
def _postgresql(pg: PostgresCluster) -> tuple[Callable[[], None], Dump, dict[str, Day]]:
    def dump(path: Path) -> None:
        with path.open("wb") as f:
            subprocess.run(
                [
                    str(postgres_bindir() / "pg_dump"),
                    *("-h", str(pg.socket_dir), "-p", str(pg.port), "-U", "postgres"),
                    "--format=custom",
                    "--compress=0",
                    "lms",
                ],
                stdout=f,
                check=True,
            )

    days = {"lms": lambda n: lms_day(pg, n), "uniform": lambda n: churn_day(pg, n)}
    return (lambda: seed_lms(pg)), dump, days


# -- MariaDB: mariadb-dump --single-transaction (backupd's options) ----------------------
def _mariadb(
    server: MariaDBServer, db: str = "lms"
) -> tuple[Callable[[], None], Dump, dict[str, Day]]:
    words = ",".join(f"'{w}'" for w in WORDS)
    pick = f"ELT(1 + FLOOR(RAND() * {len(WORDS)}), {words})"

    def seed() -> None:
        server.sql(f"DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}")
        body = "CONCAT_WS(' ', " + ", ".join([pick] * 12) + ", MD5(seq))"
        server.sql(
            "CREATE TABLE accounts (id INT PRIMARY KEY, balance INT, name VARCHAR(64),"
            " email VARCHAR(128));"
            "INSERT INTO accounts SELECT seq, 0, CONCAT('learner ', seq),"
            " CONCAT('l', seq, '@example.org') FROM seq_1_to_200000;"
            "CREATE TABLE posts (id INT AUTO_INCREMENT PRIMARY KEY, author INT, body TEXT,"
            " edited DATETIME NULL);"
            f"INSERT INTO posts (author, body) SELECT seq % 5000, {body} FROM seq_1_to_150000;"
            "CREATE TABLE history (id INT AUTO_INCREMENT PRIMARY KEY, aid INT, delta INT,"
            " mtime DATETIME);",
            db=db,
        )

    def lms(night: int) -> None:  # as bench.workloads.lms_day does to PostgreSQL
        server.sql(
            # a derived table is materialised once (an IN subquery with RAND() is not)
            f"UPDATE accounts a JOIN (SELECT DISTINCT 1 + FLOOR(RAND({night}) * 10000) AS id"
            " FROM seq_1_to_10000) hot USING (id) SET a.balance = a.balance + 1;"
            f"INSERT INTO posts (author, body) SELECT seq % 5000, CONCAT('new post ', MD5("
            f"seq + {night * 10000}), ' about the course') FROM seq_1_to_1500;"
            "UPDATE posts SET body = CONCAT(body, ' (edited)'), edited = NOW()"
            " ORDER BY id DESC LIMIT 150;"
            "INSERT INTO history (aid, delta, mtime) SELECT 1 + seq % 50000, seq % 1000, NOW()"
            " FROM seq_1_to_10000;",
            db=db,
        )

    def uniform(night: int) -> None:  # every page touched: bench.workloads.churn_day
        server.sql(
            f"UPDATE accounts SET balance = balance + {night} WHERE id % 100 = {night};"
            f"UPDATE posts SET body = CONCAT(body, ' (edited)') WHERE id % 100 = {night};",
            db=db,
        )

    def dump(path: Path) -> None:
        with path.open("wb") as f:
            subprocess.run(
                [
                    "mariadb-dump",
                    "--no-defaults",
                    f"--socket={server.socket}",
                    "-uroot",
                    "--single-transaction",
                    "--routines",
                    "--events",
                    "--triggers",
                    "--hex-blob",
                    "--default-character-set=utf8mb4",
                    "--",
                    db,
                ],
                stdout=f,
                check=True,
            )

    return seed, dump, {"lms": lms, "uniform": uniform}


# -- SQLite: a VACUUM INTO copy (backupd's way) ------------------------------------------
def _sqlite(db: Path) -> tuple[Callable[[], None], Dump, dict[str, Day]]:
    import random

    def seed() -> None:
        db.unlink(missing_ok=True)
        rng = random.Random(7)
        with sqlite3.connect(db) as c:
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INT, name TEXT)")
            c.executemany(
                "INSERT INTO accounts VALUES (?, 0, ?)",
                ((i, f"learner {i}") for i in range(1, 200_001)),
            )
            c.execute("CREATE TABLE posts (id INTEGER PRIMARY KEY, author INT, body TEXT)")
            c.executemany(
                "INSERT INTO posts (author, body) VALUES (?, ?)",
                ((i % 5000, " ".join(rng.choices(WORDS, k=40))) for i in range(150_000)),
            )

    def lms(night: int) -> None:
        rng = random.Random(night)
        with sqlite3.connect(db) as c:
            c.executemany(
                "UPDATE accounts SET balance = balance + 1 WHERE id = ?",
                ((rng.randint(1, 10_000),) for _ in range(10_000)),
            )
            c.executemany(
                "INSERT INTO posts (author, body) VALUES (?, ?)",
                ((i % 5000, " ".join(rng.choices(WORDS, k=40))) for i in range(1500)),
            )

    def uniform(night: int) -> None:
        with sqlite3.connect(db) as c:
            c.execute("UPDATE accounts SET balance = balance + 1 WHERE id % 100 = ?", (night,))
            c.execute("UPDATE posts SET body = body || ' (edited)' WHERE id % 100 = ?", (night,))

    def dump(path: Path) -> None:
        path.unlink(missing_ok=True)
        with sqlite3.connect(db) as c:
            c.execute("VACUUM INTO ?", (str(path),))

    return seed, dump, {"lms": lms, "uniform": uniform}
