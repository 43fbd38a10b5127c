"""status_seconds_1m: what `backupctl status` asks the catalogue, on a fleet's history.

A generated catalogue (SQLite, as the default): 500 hosts x 4 sources, 500 runs and 500
archives per source (1 M each; the retention keeps the newest 37 of a source live, the
rest are pruned, as `prune` leaves them), a drill every 7 runs, a failure every 50. The
config names the same 2,000 sources (loopback addresses: nothing is contacted). Measured:
the status rows (`actions/status.py`, what the table and `--json` print), best of 3, and
how many SQL statements they take; `backupctl status --json` end to end is informative.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event

HOSTS = int(os.environ.get("BENCH_CATALOGUE_HOSTS", 500))  # fewer: a quick try of the bench
SOURCES_PER_HOST, HISTORY, LIVE = 4, 500, 37
KINDS = ("postgresql", "mariadb", "directory", "sqlite")
FMT = "%Y-%m-%d %H:%M:%S.%f"  # how the catalogue's UTCDateTime stores a datetime in SQLite


def fleet_toml(root: Path) -> str:
    lines = [
        f'state_dir = "{root / "state"}"',
        f'[store]\npath = "{root / "store"}"',
        f'[passphrase]\nfile = "{root / "passphrase"}"',
    ]
    for h in range(HOSTS):
        lines.append(
            f'[hosts.h{h:03d}]\naddress = "127.0.{h // 250}.{h % 250 + 1}"\nuser = "backup"\n'
            f'key = "{root / "id"}"\n'
            'host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVuaXQtdGVzdC1ub3QtYS1yZWFsLWtleQ"'
        )
        for k, kind in enumerate(KINDS[:SOURCES_PER_HOST]):
            where = {"directory": 'path = "/srv/www"', "sqlite": 'path = "/srv/app.db"'}
            lines.append(f'[hosts.h{h:03d}.sources.s{k}]\nkind = "{kind}"\n{where.get(kind, "")}')
    return "\n\n".join(lines) + "\n"


def fill(db: Path) -> None:
    """The history, straight into the migrated catalogue (the ORM would take minutes)."""
    start = datetime(2025, 7, 1, 2, 0, tzinfo=UTC)
    with sqlite3.connect(db) as c:
        c.executemany(
            "INSERT INTO hosts (id, name, address) VALUES (?, ?, '127.0.0.1')",
            [(h + 1, f"h{h:03d}") for h in range(HOSTS)],
        )
        sources = [
            (h * SOURCES_PER_HOST + k + 1, h + 1, f"s{k}", KINDS[k])
            for h in range(HOSTS)
            for k in range(SOURCES_PER_HOST)
        ]
        c.executemany("INSERT INTO sources (id, host_id, name, kind) VALUES (?,?,?,?)", sources)
        for sid, hid, name, _kind in sources:
            c.executemany(
                "INSERT INTO runs (source_id, trigger, status, started_at, finished_at, nbytes,"
                " error) VALUES (?, 'schedule', ?, ?, ?, 1000, ?)",
                (_run(sid, day, start) for day in range(HISTORY)),
            )
            first = c.execute("SELECT min(id) FROM runs WHERE source_id = ?", (sid,)).fetchone()[0]
            c.executemany(
                "INSERT INTO archives (run_id, source_id, repository, name, item, filename,"
                " created_at, nbytes, sha256, original_size, compressed_size,"
                " deduplicated_size, facts, pruned_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (_archive(sid, hid, name, first, day, start) for day in range(HISTORY)),
            )
            c.executemany(
                "INSERT INTO drills (host, source, repository, archive, trigger, status,"
                " started_at, finished_at, rto_seconds, nbytes, checks)"
                " VALUES (?, ?, ?, ?, 'schedule', 'pass', ?, ?, 2.5, 1000, '[]')",
                (
                    (
                        f"h{hid - 1:03d}",
                        name,
                        f"/store/h{hid - 1:03d}",
                        f"a{day}",
                        _at(start, day, 5),
                        _at(start, day, 6),
                    )
                    for day in range(0, HISTORY, 7)
                ),
            )


def _at(start: datetime, day: int, minutes: int = 0) -> str:
    return (start + timedelta(days=day, minutes=minutes)).strftime(FMT)


def _run(sid: int, day: int, start: datetime) -> tuple[Any, ...]:
    failed = day % 50 == 49
    status = "failed" if failed else "succeeded"
    return (sid, status, _at(start, day), _at(start, day, 3), "pg_dump: exit 1" if failed else None)


def _archive(
    sid: int, hid: int, name: str, first: int, day: int, start: datetime
) -> tuple[Any, ...]:
    pruned = None if day >= HISTORY - LIVE else _at(start, day + LIVE)
    repo = f"/store/h{hid - 1:03d}"
    return (
        first + day,
        sid,
        repo,
        f"{name}.main.{day}",
        "main",
        "dump",
        _at(start, day, 2),
        1000,
        "0" * 64,
        5000,
        1500,
        300,
        "{}",
        pruned,
    )


def write_fleet(root: Path, extra: str = "") -> Path:
    """The fleet's config (and a state directory, a passphrase file) under ``root``."""
    (root / "state").mkdir(parents=True, mode=0o700)
    (root / "passphrase").write_text("unused\n")
    (root / "passphrase").chmod(0o600)
    config = root / "backupd.toml"
    config.write_text(fleet_toml(root) + extra)
    return config


def count_statements(engine: Any) -> list[str]:
    said: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: said.append(a[2]))
    return said


def run(work: Path, bindir: Path) -> dict[str, Any]:
    from backupd.actions.context import Context, settle
    from backupd.actions.status import queue_rows, status_rows
    from backupd.catalogue import Catalogue
    from jobs.registry import load_config

    root = work / "catalogue-bench"
    config_path = write_fleet(root)
    config = load_config(config_path)
    Catalogue(config.catalogue_url).engine.dispose()  # migrated, empty
    made = time.monotonic()
    fill(root / "state" / "catalogue.db")
    os.sync()  # measure reading the catalogue, not the kernel writing it back
    n = HOSTS * SOURCES_PER_HOST * HISTORY
    print(f"bench: catalogue of {n} runs and archives made in {time.monotonic() - made:.0f}s")
    ctx = Context(config)
    settle()  # as backupctl does once its context is made
    said = count_statements(ctx.catalogue.engine)
    rows: list[dict[str, Any]] = []
    best = float("inf")
    for _ in range(5):
        said.clear()
        t0 = time.monotonic()
        rows = status_rows(ctx)
        queue_rows(ctx)
        best = min(best, time.monotonic() - t0)
    assert len(rows) == HOSTS * SOURCES_PER_HOST and all(r["archives"] == LIVE for r in rows)
    t0 = time.monotonic()
    subprocess.run(
        [str(bindir / "backupctl"), "--config", str(config_path), "status", "--json"],
        check=False,
        capture_output=True,
    )
    cli = time.monotonic() - t0
    return {
        "status_seconds_1m": round(best, 3),
        "status_statements_1m": len(said),
        "status_cli_seconds_1m": round(cli, 2),
    }


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(run(Path(tmp), Path(sys.executable).parent))
