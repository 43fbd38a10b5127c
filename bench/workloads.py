"""Data for the benchmarks: a semi-compressible stream, a tree of files, a changing LMS."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

from tests.harness.postgres import PostgresCluster, postgres_bindir

WORDS = [
    "the",
    "course",
    "learner",
    "lesson",
    "quiz",
    "answer",
    "video",
    "module",
    "teacher",
    "forum",
    "post",
    "reply",
    "grade",
    "submission",
    "deadline",
    "week",
    "reading",
    "notes",
    "discussion",
    "project",
    "team",
    "badge",
    "certificate",
    "progress",
    "chapter",
    "exercise",
    "solution",
    "feedback",
    "review",
    "open",
    "source",
    "platform",
    "community",
    "volunteer",
    "mentor",
    "language",
    "science",
    "history",
    "math",
]


def du(path: Path) -> int:
    """Bytes of the files under ``path`` (a repository's size)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def make_stream_file(path: Path, size: int) -> Path:
    """Half random, half text-like blocks: compresses somewhat, like a real dump."""
    rng = random.Random(1)
    text = " ".join(rng.choice(WORDS) for _ in range(300_000)).encode()  # ~2.4 MB
    block = 1 << 20
    with open(path, "wb") as f:
        written = 0
        while written < size:
            half = block // 2
            offset = rng.randrange(0, len(text) - half)
            chunk = os.urandom(half) + text[offset : offset + half]
            f.write(chunk[: size - written])
            written += len(chunk)
    path.chmod(0o644)
    return path


def make_tree(root: Path, total: int, files: int) -> Path:
    size = total // files
    for i in range(files):
        path = root / f"dir{i % 100:02d}" / f"file{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    return root


def touch_one_percent(root: Path) -> int:
    """Rewrite a 4 KiB block inside 1 % of the files (as an edited upload would be)."""
    paths = sorted(root.rglob("*.bin"))
    changed = paths[::100]
    for path in changed:
        with open(path, "r+b") as f:
            f.seek(path.stat().st_size // 2)
            f.write(os.urandom(4096))
    return len(changed)


def seed_lms(pg: PostgresCluster, db: str = "lms", scale: int = 10, posts: int = 150_000) -> None:
    """pgbench's tables plus text-heavy forum posts (pgbench's filler alone compresses
    unrealistically well)."""
    pg.psql(f'DROP DATABASE IF EXISTS "{db}"')
    pg.createdb(db)
    subprocess.run(
        [
            str(postgres_bindir() / "pgbench"),
            "-i",
            "-s",
            str(scale),
            "-q",
            "-h",
            str(pg.socket_dir),
            "-p",
            str(pg.port),
            "-U",
            "postgres",
            db,
        ],
        check=True,
        capture_output=True,
    )
    words = "ARRAY[" + ",".join(f"'{w}'" for w in WORDS) + "]"
    pg.psql(
        "CREATE TABLE posts (id serial PRIMARY KEY, author int, body text, edited timestamptz);"
        f"INSERT INTO posts (author, body) SELECT g % 5000, (SELECT string_agg(({words})"
        f"[1 + floor(random() * {len(WORDS)})::int], ' ') FROM generate_series(1, 60 + g % 7))"
        f" FROM generate_series(1, {posts}) g;",
        db=db,
    )


def lms_day(pg: PostgresCluster, day: int, db: str = "lms") -> None:
    """One day of a learning platform: learners active this week (a hot 5 % of accounts)
    make 10,000 balance changes, 1,500 posts are written, 150 recent posts edited, and
    10,000 history rows appended. Most of the database is as it was yesterday."""
    pg.psql(
        f"SELECT setseed({day / 10});"
        "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid IN"
        " (SELECT 1 + floor(random() * 50000)::int FROM generate_series(1, 10000));"
        "INSERT INTO posts (author, body) SELECT g % 5000, 'new post ' || md5(g::text) ||"
        " ' about the course' FROM generate_series(1, 1500) g;"
        "UPDATE posts SET body = body || ' (edited)', edited = now() WHERE id IN"
        " (SELECT max(id) - floor(random() * 10000)::int FROM posts, generate_series(1, 150)"
        "  GROUP BY generate_series);"
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)"
        " SELECT 1 + g % 100, 1 + g % 10, 1 + g % 50000, g % 1000, now()"
        " FROM generate_series(1, 10000) g;",
        db=db,
    )


def churn_day(pg: PostgresCluster, day: int) -> None:
    """The worst case for deduplication: 1 % of accounts and posts change, spread evenly
    over every page (every 100th row), so every Borg chunk of the dump changes daily."""
    pg.psql(
        f"UPDATE pgbench_accounts SET abalance = abalance + {day} WHERE aid % 100 = {day};"
        f"UPDATE posts SET body = body || ' (edited)', edited = now() WHERE id % 100 = {day};"
        "INSERT INTO posts (author, body) SELECT g % 5000, 'new post ' || md5(g::text) || "
        "' about the course' FROM generate_series(1, 1500) g;",
        db="lms",
    )


def seed_restore_db(pg: PostgresCluster, name: str, dump_bytes: int) -> dict[str, int]:
    """A database whose ``pg_dump -Fc -Z0`` is about ``dump_bytes``: learners (numeric,
    text, a unique email), enrolments (narrow numeric rows, two indexes) and forum posts
    (text made of 5,000 random sentences, combined per row so nothing repeats at a period
    Borg would deduplicate), all generated server-side. Returns the row count per table."""
    rows = {  # share of the dump / bytes a row takes in it (COPY text), measured
        "learners": max(1000, int(dump_bytes * 0.15 / 86)),
        "enrolments": max(1000, int(dump_bytes * 0.20 / 59)),
        "posts": max(1000, int(dump_bytes * 0.65 / 530)),
    }
    words = "ARRAY[" + ",".join(f"'{w}'" for w in WORDS) + "]"
    pick = f"({words})[1 + floor(random() * {len(WORDS)})::int]"
    pg.psql(f"DROP DATABASE IF EXISTS {name}")
    pg.createdb(name)
    pg.psql(
        "CREATE TEMP TABLE s AS SELECT i, (SELECT string_agg("
        f"{pick}, ' ') FROM generate_series(1, 6 + i % 15)) AS t"
        " FROM generate_series(0, 4999) i;"
        "ANALYZE s;"
        "CREATE TABLE learners (id int PRIMARY KEY, email text UNIQUE NOT NULL, name text,"
        " country char(2), joined timestamptz, credits numeric(10, 2));"
        "INSERT INTO learners SELECT g, 'learner' || g || '@example.org',"
        f" initcap({pick}) || ' ' || initcap({pick}),"
        " (ARRAY['NG','KE','IN','BR','DE','US','FR','ID'])[1 + g % 8],"
        " timestamptz '2020-01-01' + random() * interval '1800 days',"
        " round((random() * 500)::numeric, 2)"
        f" FROM generate_series(1, {rows['learners']}) g;"
        "CREATE TABLE enrolments (id bigint PRIMARY KEY, learner_id int NOT NULL,"
        " course_id int NOT NULL, progress numeric(5, 2), score numeric(6, 2),"
        " enrolled timestamptz);"
        f"INSERT INTO enrolments SELECT g, 1 + floor(random() * {rows['learners']})::int,"
        " 1 + floor(random() * 400)::int, round((random() * 100)::numeric, 2),"
        " round((random() * 1000)::numeric, 2),"
        " timestamptz '2020-01-01' + random() * interval '1800 days'"
        f" FROM generate_series(1, {rows['enrolments']}) g;"
        "CREATE INDEX ON enrolments (learner_id);"
        "CREATE INDEX ON enrolments (course_id);"
        "CREATE TABLE posts (id bigint PRIMARY KEY, learner_id int NOT NULL, course_id int,"
        " created timestamptz, title text, body text);"
        "INSERT INTO posts SELECT k.g, k.learner, 1 + k.g % 400,"
        " timestamptz '2020-01-01' + k.g * interval '17 seconds', initcap(a.t),"
        " b.t || '. ' || c.t || '. ' || d.t || '. ' || e.t || '.'"
        f" FROM (SELECT g, 1 + floor(random() * {rows['learners']})::int AS learner,"
        " floor(random() * 5000)::int AS ra, floor(random() * 5000)::int AS rb,"
        " floor(random() * 5000)::int AS rc, floor(random() * 5000)::int AS rd,"
        " floor(random() * 5000)::int AS re"
        f" FROM generate_series(1, {rows['posts']}) g) k"
        " JOIN s a ON a.i = k.ra JOIN s b ON b.i = k.rb JOIN s c ON c.i = k.rc"
        " JOIN s d ON d.i = k.rd JOIN s e ON e.i = k.re;"
        "CREATE INDEX ON posts (learner_id);"
        "CREATE INDEX ON posts (course_id, created);"
        "ANALYZE;",
        db=name,
    )
    return rows
