"""The fleet at a glance from the catalogue: each source's newest run, success and failure
and its newest drill, right, in the same few statements for 3 sources as for 60."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, update

from backupd.catalogue import Catalogue, RunStatus
from backupd.catalogue.models import DrillStatus, Run

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


def run_at(cat: Catalogue, sid: int, day: int, status: RunStatus, error: str | None = None) -> int:
    rid = cat.start_run(sid, "schedule")
    cat.finish_run(rid, status, error=error)
    with cat.session() as s:  # a history: each run on its own night
        started = T0 + timedelta(days=day)
        s.execute(
            update(Run)
            .where(Run.id == rid)
            .values(started_at=started, finished_at=started + timedelta(minutes=3))
        )
    return rid


def fleet(cat: Catalogue, hosts: int) -> None:
    """Per host: ``db`` fails on night 2, warns on night 3 (its newest); ``files`` never ran
    well; ``new`` never ran. Runs are written out of order (ids do not follow time)."""
    for h in range(hosts):
        db = cat.ensure_source(f"web{h}", "192.0.2.1", "db", "postgresql")
        files = cat.ensure_source(f"web{h}", "192.0.2.1", "files", "directory")
        cat.ensure_source(f"web{h}", "192.0.2.1", "new", "sqlite")
        run_at(cat, db, 3, RunStatus.WARNING)
        run_at(cat, db, 1, RunStatus.SUCCEEDED)
        run_at(cat, db, 2, RunStatus.FAILED, error=f"web{h}: pg_dump exited 1")
        run_at(cat, db, 0, RunStatus.FAILED, error="older")
        run_at(cat, files, 0, RunStatus.FAILED, error="rsync 23")
        run_at(cat, files, 1, RunStatus.INTERRUPTED)
        for verdict in (DrillStatus.FAIL, DrillStatus.PASS):
            drill = cat.start_drill(f"web{h}", "db", "/store", f"a-{verdict}", "schedule", None)
            cat.finish_drill(drill, verdict, rto_seconds=1.0)
        cat.start_drill(f"web{h}", "db", "/store", "running", "schedule", None)  # unfinished


def statements(cat: Catalogue) -> list[str]:
    said: list[str] = []

    def note(*args: Any) -> None:
        said.append(args[2])

    event.listen(cat.engine, "before_cursor_execute", note)
    return said


def test_each_source_shows_its_newest_run_success_failure_and_drill(tmp_path: Path) -> None:
    cat = Catalogue(f"sqlite:///{tmp_path / 'c.db'}")
    fleet(cat, 2)
    rows = {(r.host, r.source): r for r in cat.status()}
    assert [k for k in rows] == [(f"web{h}", s) for h in (0, 1) for s in ("db", "files", "new")]
    db = rows[("web1", "db")]
    assert (db.last_status, db.last_run) == (RunStatus.WARNING, T0 + timedelta(days=3))
    assert db.last_success == T0 + timedelta(days=3, minutes=3)  # a warning is a success
    assert (db.last_failure, db.last_failure_error) == (
        T0 + timedelta(days=2),
        "web1: pg_dump exited 1",
    )
    files = rows[("web1", "files")]
    assert (files.last_status, files.last_success) == (RunStatus.INTERRUPTED, None)
    assert files.last_failure_error == "rsync 23"
    new = rows[("web1", "new")]
    assert (new.last_status, new.last_run, new.last_success, new.last_failure) == (None,) * 4
    # a drill recorded for a source the catalogue has no backup row of (a rebuilt or
    # hand-fed catalogue) is still shown
    drill = cat.start_drill("web9", "gone", "/store", "a", "schedule", None)
    cat.finish_drill(drill, DrillStatus.FAIL, rto_seconds=1.0)
    drills = cat.last_drills()
    assert {k: d.status for k, d in drills.items()} == {
        ("web0", "db"): DrillStatus.PASS,
        ("web1", "db"): DrillStatus.PASS,
        ("web9", "gone"): DrillStatus.FAIL,
    }


def test_status_asks_the_same_few_statements_whatever_the_fleet(tmp_path: Path) -> None:
    counts = []
    for hosts in (1, 20):
        cat = Catalogue(f"sqlite:///{tmp_path / f'c{hosts}.db'}")
        fleet(cat, hosts)
        said = statements(cat)
        cat.status()
        cat.last_drills()
        cat.newest_per_item()
        counts.append(len([s for s in said if s.lstrip().upper().startswith("SELECT")]))
        cat.engine.dispose()
    assert counts[0] == counts[1] <= 5, counts
