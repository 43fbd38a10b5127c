"""A small real fleet for "a week in the life" (tests/e2e/test_week.py): three droplets on
links of their own, shaped like the servers backupd meets, their churn between nights, and
what each source held when each night's backup ran.

- ``db``: PostgreSQL (two databases, an owner role and a reader role with a grant) and
  MariaDB; pg_dump is the real one behind a gate the test can hold mid-stream.
- ``app``: a SQLite database in WAL mode with a writer committing in a loop.
- ``files``: a tree with odd names (one not UTF-8), a sparse file, a file only root can
  read (the login cannot), and a Docker volume through a stand-in docker CLI.
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.droplet import Droplet
from tests.harness.mariadb import MariaDBServer
from tests.harness.postgres import PostgresCluster, postgres_bindir

PG_DATABASES = ("wk_shop", "wk_forum")
MARIA_DB = "wk_maria"
MARIA_PASSWORD = "wk pa'ss"
NON_UTF8 = b"caf\xe9 menu.txt"  # Latin-1 "café": not valid UTF-8

HELD_PG_DUMP = """#!/bin/sh
# Stand-in for pg_dump: the real one, its output held after the first 64 KiB while the
# test holds the gate (dd bs=1 takes exactly that much: nothing of the dump is lost).
marks={marks}
{pg_dump} "$@" | {{
  dd bs=1 count=65536 2>/dev/null
  [ -e "$marks/hold" ] && touch "$marks/midway.$$"
  while [ -e "$marks/hold" ]; do sleep 0.1; done
  cat
}}
"""

DOCKER = """#!/bin/sh
# Stand-in for the Docker CLI: only `docker volume inspect --format {{{{ .Mountpoint }}}} -- NAME`.
if [ "$1 $2 $3 $4 $5" = "volume inspect --format {{{{ .Mountpoint }}}} --" ]; then
  case "$6" in
    wk_media) echo "{mountpoint}"; exit 0 ;;
    *) echo "Error response from daemon: get $6: no such volume" >&2; exit 1 ;;
  esac
fi
echo "stand-in docker: unexpected arguments: $*" >&2
exit 125
"""


class Gate:
    """Holds the stand-in pg_dump mid-stream while ``hold`` exists."""

    def __init__(self, root: Path) -> None:
        self.marks = root / "marks"
        self.marks.mkdir(mode=0o777)
        self.marks.chmod(0o777)
        self.script = root / "held-pg_dump"
        real = postgres_bindir() / "pg_dump"
        self.script.write_text(HELD_PG_DUMP.format(marks=self.marks, pg_dump=real))
        self.script.chmod(0o755)

    def hold(self) -> None:
        for mark in self.marks.glob("midway.*"):
            mark.unlink()
        (self.marks / "hold").touch()

    def release(self) -> None:
        (self.marks / "hold").unlink(missing_ok=True)

    def midway(self) -> bool:
        return any(self.marks.glob("midway.*"))


class Writer:
    """Commits to the SQLite database in a loop, from the droplet's side of the world."""

    def __init__(self, path: Path) -> None:
        self.path, self.commits = path, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)

    def _write(self) -> None:
        db = sqlite3.connect(self.path, timeout=60)
        while not self._stop.wait(0.005):
            db.execute("INSERT INTO sessions (token) VALUES (hex(randomblob(16)))")
            db.commit()
            self.commits += 1
        db.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Fleet:
    root: Path
    droplets: dict[str, Droplet]
    pg: PostgresCluster
    maria: MariaDBServer
    gate: Gate
    rng: random.Random
    tree: Path = field(init=False)
    volume: Path = field(init=False)
    sqlite: Path = field(init=False)
    writer: Writer = field(init=False)

    def __post_init__(self) -> None:
        files = self.droplets["files"]
        self.tree = files.root / "srv" / "uploads"
        self.volume = files.root / "docker" / "volumes" / "wk_media" / "_data"
        self.sqlite = self.droplets["app"].root / "srv" / "app.db"

    # -- the world as it starts ----------------------------------------------------------
    def build(self) -> None:
        self._databases()
        self._sqlite()
        self._tree()
        docker = self.droplets["files"].bin_dir / "docker"
        docker.write_text(DOCKER.format(mountpoint=self.volume))
        docker.chmod(0o755)
        self.writer = Writer(self.sqlite)
        self.writer.start()

    def _databases(self) -> None:
        pg = self.pg
        pg.psql("DROP ROLE IF EXISTS wk_reader; DROP ROLE IF EXISTS wk_owner")
        pg.psql("CREATE ROLE wk_owner LOGIN; CREATE ROLE wk_reader")
        for db in PG_DATABASES:
            pg.psql(f"DROP DATABASE IF EXISTS {db}")
            pg.psql(f"CREATE DATABASE {db} OWNER wk_owner")
        pg.psql(
            "CREATE TABLE customers (id serial PRIMARY KEY, name text, email text);"
            "CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers,"
            " total numeric(10,2), placed timestamptz DEFAULT now());"
            "INSERT INTO customers (name, email) SELECT 'customer ' || g, g || '@example.org'"
            " FROM generate_series(1, 3000) g;"
            "INSERT INTO orders (customer_id, total) SELECT 1 + g % 3000, g % 997"
            " FROM generate_series(1, 20000) g;"
            "ALTER TABLE customers OWNER TO wk_owner; ALTER TABLE orders OWNER TO wk_owner;",
            db="wk_shop",
        )
        pg.psql(
            "CREATE TABLE posts (id serial PRIMARY KEY, author text, body text);"
            "INSERT INTO posts (author, body) SELECT 'u' || (g % 50), repeat(md5(g::text), 8)"
            " FROM generate_series(1, 4000) g;"
            # a policy naming a role (CREATE POLICY ... TO wk_reader) is issue 12's: a
            # drill's scratch server has no such role yet
            "ALTER TABLE posts OWNER TO wk_owner; GRANT SELECT ON posts TO wk_reader;",
            db="wk_forum",
        )
        self.maria.sql(f"DROP DATABASE IF EXISTS {MARIA_DB}; CREATE DATABASE {MARIA_DB}")
        self.maria.sql(
            "CREATE TABLE courses (id INT PRIMARY KEY AUTO_INCREMENT, title TEXT);"
            "CREATE TABLE enrolments (id INT PRIMARY KEY AUTO_INCREMENT, course INT, who TEXT);"
            "INSERT INTO courses (title) SELECT CONCAT('course ', seq) FROM seq_1_to_200;"
            "INSERT INTO enrolments (course, who) SELECT seq % 200, CONCAT('s', seq)"
            " FROM seq_1_to_5000;",
            db=MARIA_DB,
        )
        self.maria.create_user("wk_backup", MARIA_PASSWORD)

    def _sqlite(self) -> None:
        self.sqlite.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(self.sqlite) as db:
            db.executescript(
                "PRAGMA journal_mode=WAL;"
                "CREATE TABLE sessions (id INTEGER PRIMARY KEY, token TEXT);"
            )
            db.executemany(
                "INSERT INTO sessions (token) VALUES (?)", [(f"t{i}" * 40,) for i in range(20000)]
            )
        self._give(self.sqlite.parent, "app")

    def _tree(self) -> None:
        rng = self.rng
        for i in range(120):
            path = self.tree / f"course-{i % 6}" / f"page-{i}.html"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(rng.randbytes(rng.randint(100, 20_000)))
        (self.tree / "odd names").mkdir()
        (self.tree / "odd names" / 'it\'s "quoted" $(x) ünïcode;.txt').write_text("odd\n")
        (self.tree / "odd names" / "-starts with a dash").write_text("dash\n")
        os.close(
            os.open(
                bytes(self.tree / "odd names") + b"/" + NON_UTF8, os.O_WRONLY | os.O_CREAT, 0o644
            )
        )
        with open(self.tree / "lastlog", "wb") as f:  # sparse: 256 MiB apparent, 2 bytes real
            f.truncate(256 * 1024 * 1024)
            f.seek(200 * 1024 * 1024)
            f.write(b"ok")
        self.volume.mkdir(parents=True)
        for i in range(30):
            (self.volume / f"img-{i}.bin").write_bytes(rng.randbytes(rng.randint(1000, 50_000)))
        self._give(self.tree.parent, "files")
        self._give(self.volume.parents[2], "files")
        secret = self.tree / "root-only.key"  # the login cannot read this: a warning, not a loss
        secret.write_text("root's\n")
        secret.chmod(0o600)

    def _give(self, path: Path, droplet: str) -> None:
        user = self.droplets[droplet].user
        subprocess.run(["chown", "-R", f"{user}:", str(path)], check=True)

    # -- a day's changes ----------------------------------------------------------------
    def churn(self, night: int) -> None:
        rng, pg = self.rng, self.pg
        pg.psql(
            f"INSERT INTO orders (customer_id, total) SELECT 1 + g % 3000, {night}"
            f" FROM generate_series(1, {rng.randint(50, 500)}) g;"
            f"UPDATE customers SET email = 'n{night}-' || email WHERE id % 97 = {night};",
            db="wk_shop",
        )
        pg.psql(
            f"INSERT INTO posts (author, body) SELECT 'night{night}', md5(g::text)"
            f" FROM generate_series(1, {rng.randint(10, 200)}) g;",
            db="wk_forum",
        )
        self.maria.sql(
            f"INSERT INTO enrolments (course, who) SELECT seq % 200, 'n{night}'"
            f" FROM seq_1_to_{rng.randint(10, 300)}",
            db=MARIA_DB,
        )
        pages = sorted(self.tree.glob("course-*/page-*.html"))
        rng.choice(pages).unlink()
        rng.choice(pages[1:]).write_bytes(rng.randbytes(5000))
        new = self.tree / f"course-{night % 6}" / f"night-{night}.html"
        new.write_bytes(rng.randbytes(rng.randint(100, 9000)))
        (self.volume / f"img-night-{night}.bin").write_bytes(rng.randbytes(3000))
        self._give(self.tree.parent, "files")
        self._give(self.volume.parents[2], "files")
        (self.tree / "root-only.key").chmod(0o600)
        os.chown(self.tree / "root-only.key", 0, 0)

    # -- what a source holds now -------------------------------------------------------
    def pg_state(self, db: str) -> dict[str, str]:
        """Per table: its rows' count and a digest of their content, in id order."""
        tables = self.pg.psql(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", db=db
        ).split()
        digest = "count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY id), ''))"
        return {t: self.pg.psql(f"SELECT {digest} FROM {t} t", db=db) for t in tables}

    def tree_state(self, root: Path | None = None) -> dict[bytes, tuple[object, ...]]:
        """What a restore of the tree must give back: what the login can read."""
        base = bytes(root or self.tree)
        found: dict[bytes, tuple[object, ...]] = {}
        for dirpath, dirnames, filenames in os.walk(base):
            for name in sorted(dirnames + filenames):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, base)
                if rel == b"root-only.key":
                    continue
                st = os.lstat(path)
                if os.path.isdir(path):
                    found[rel] = ("d", st.st_mode)
                else:
                    found[rel] = ("f", st.st_mode, st.st_size, int(st.st_mtime), _digest(path))
        return found


def _digest(path: bytes) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
