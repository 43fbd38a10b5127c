"""find_seconds_1m: `backupctl find` over a catalogue index of 1 M file versions (issue 16).

A generated catalogue (SQLite, the default): 20 tree sources of 50,000 files, 30 nightly
archives each, 1 % of the files changed each night, so 1,000,000 + 20 x 29 x 500 version
rows. Measured, best of 3: find of one file's name (every version of it, with the nights
that held it), and as baselines in the same run a bare count over the same table (a full
scan) and a broad glob (``*.pdf``, a fiftieth of the files). Also what a change alert's
judgement of one night of one tree (50,000 files, 500 changed) costs the catalogue
(decision 0024).
"""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backupd.catalogue import Catalogue
from backupd.catalogue.models import Archive

SOURCES = int(os.environ.get("BENCH_FIND_SOURCES", 20))
FILES, NIGHTS, CHANGED = 50_000, 30, 500
FMT = "%Y-%m-%d %H:%M:%S.%f"


def run(work: Path) -> dict[str, Any]:
    db = work / "find-catalogue.db"
    cat = Catalogue(f"sqlite:///{db}")  # migrated to the newest schema
    cat.engine.dispose()
    rows = fill(db)
    cat = Catalogue(f"sqlite:///{db}")
    one = _best(lambda: cat.find_versions("file-04242.png"))
    broad = _best(lambda: cat.find_versions("*.pdf"))
    with sqlite3.connect(db) as c:
        scan = _best(lambda: c.execute("SELECT count(*) FROM file_versions").fetchone())
    found = len(cat.find_versions("file-04242.png"))
    with cat.session() as session:  # one tree's last night against the one before
        before, after = (session.get(Archive, 1000 + n) for n in (NIGHTS - 2, NIGHTS - 1))
    assert before is not None and after is not None
    judge = _best(lambda: cat.tree_change(before, after))
    return {
        "find_seconds_1m": round(one, 3),
        "find_glob_seconds_1m": round(broad, 3),
        "find_vs_count_scan_ratio": round(one / scan, 2),
        "change_judge_seconds_50k": round(judge, 3),
        "find_index_rows": rows,
        "find_versions_found": found,
    }


def fill(db: Path) -> int:
    """Hosts, sources, archives and versions straight into the migrated catalogue."""
    start = datetime(2026, 10, 1, 2, 0, tzinfo=UTC)
    with sqlite3.connect(db) as c:
        c.execute("INSERT INTO hosts (id, name, address) VALUES (1, 'web1', '127.0.0.1')")
        total = 0
        for s in range(1, SOURCES + 1):
            c.execute(
                "INSERT INTO sources (id, host_id, name, kind) VALUES (?, 1, ?, 'directory')",
                (s, f"tree{s}"),
            )
            first_id = s * 1000
            c.executemany(
                "INSERT INTO archives (id, source_id, repository, name, item, filename,"
                " created_at, nbytes, sha256, original_size, compressed_size,"
                " deduplicated_size, facts) VALUES (?, ?, '/store/web1', ?, 'tree', 'tree',"
                " ?, 0, ?, 0, 0, 0, '{}')",
                [
                    (first_id + n, s, f"tree{s}.tree.{n}", _at(start, n), "0" * 64)
                    for n in range(NIGHTS)
                ],
            )
            total += _versions(c, s, first_id)
    return total


def _versions(c: sqlite3.Connection, s: int, first_id: int) -> int:
    """Each file's versions: one from night 0, and a new one on each night it changed."""
    rows = []
    for f in range(FILES):
        path = f"courses/c{f % 400}/unit{f % 9}/file-{f:05d}.{'pdf' if f % 50 == 0 else 'png'}"
        changes = [n for n in range(1, NIGHTS) if (f + n * 37) % (FILES // CHANGED) == 0]
        bounds = [0, *changes, NIGHTS]
        for v in range(len(bounds) - 1):
            rows.append(
                (
                    s,
                    path,
                    f * 10 + v,
                    f"{(s * FILES + f) * 64 + v:064x}",
                    first_id + bounds[v],
                    first_id + bounds[v + 1] - 1,
                )
            )
    c.executemany(
        "INSERT INTO file_versions (source_id, item, path, type, size, mode, uid, gid, mtime,"
        " sha256, first_archive_id, last_archive_id) VALUES (?, 'tree', ?, 'f', ?, 420, 33,"
        " 33, 1700000000, ?, ?, ?)",
        rows,
    )
    return len(rows)


def _at(start: datetime, night: int) -> str:
    return (start + timedelta(days=night)).strftime(FMT)


def _best(fn: Any) -> float:
    times = []
    for _ in range(3):
        began = time.monotonic()
        fn()
        times.append(time.monotonic() - began)
    return min(times)
