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


def seed_lms(pg: PostgresCluster) -> None:
    """pgbench's tables plus text-heavy forum posts (pgbench's filler alone compresses
    unrealistically well)."""
    pg.psql("DROP DATABASE IF EXISTS lms")
    pg.createdb("lms")
    subprocess.run([str(postgres_bindir() / "pgbench"), "-i", "-s", "10", "-q", "-h",
                    str(pg.socket_dir), "-p", str(pg.port), "-U", "postgres", "lms"],
                   check=True, capture_output=True)  # fmt: skip
    words = "ARRAY[" + ",".join(f"'{w}'" for w in WORDS) + "]"
    pg.psql(
        "CREATE TABLE posts (id serial PRIMARY KEY, author int, body text, edited timestamptz);"
        f"INSERT INTO posts (author, body) SELECT g % 5000, (SELECT string_agg(({words})"
        f"[1 + floor(random() * {len(WORDS)})::int], ' ') FROM generate_series(1, 60 + g % 7))"
        " FROM generate_series(1, 150000) g;",
        db="lms",
    )


def lms_day(pg: PostgresCluster, day: int) -> None:
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
        db="lms",
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
