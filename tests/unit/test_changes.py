"""Change alerts (issue 16, decision 0024): a night that looks like loss raises one alert
and holds the archive before it until acknowledged; ordinary churn stays silent."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backupd.actions.changes import acknowledge, judge_night, table_losses
from backupd.actions.context import Context
from backupd.actions.diff import diff_source
from backupd.actions.report import gather
from backupd.catalogue.versions import VersionRow
from backupd.config.load import ChangesConfig
from backupd.errors import NotFoundError
from jobs.registry import load_config
from tests.harness.example_report import write_config

NIGHT = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
POLICY = ChangesConfig()


def sha(n: int | str) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def files(n: int, prefix: str = "img/", content: str = "", size: int = 1000) -> list[VersionRow]:
    return [
        VersionRow(
            f"{prefix}{i}.jpg", "f", size, 0o644, 33, 33, 1_700_000_000, sha(f"{i}{content}")
        )
        for i in range(n)
    ]


class Fleet:
    """web1's tree source "uploads" and database source "maindb", night after night."""

    def __init__(self, tmp_path: Path, extra: str = "") -> None:
        fleet = {"web1": {"uploads": "directory", "maindb": "postgresql"}}
        self.ctx = Context(load_config(write_config(tmp_path, fleet, extra)))
        self.cat = self.ctx.catalogue
        self.nights: dict[str, list[str]] = {}
        self.n = 0

    def night(self, source: str, kind: str, item: str, content: Any) -> list[int]:
        """Record one archive of ``source`` (a tree's rows or a database's row counts) in a
        run of its own, then judge the night: the change flags it raised."""
        source_id = self.cat.ensure_source("web1", "203.0.113.10", source, kind)
        run_id = self.cat.start_run(source_id, "manual")
        self.n += 1
        when = NIGHT + timedelta(days=self.n)
        name = f"{source}.{item}.{when.isoformat()}"
        fields: dict[str, Any] = dict(
            run_id=run_id,
            source_id=source_id,
            repository="/store/web1",
            name=name,
            item=item,
            filename=item,
            created_at=when,
            nbytes=1,
            sha256="0" * 64,
        )
        if isinstance(content, dict):
            self.cat.add_archive(**fields, facts={"rows": content})
        else:
            self.cat.add_tree_archive(content, **fields, facts={"files": len(content)})
        self.nights.setdefault(source, []).append(name)
        said = judge_night(self.ctx, run_id)  # "change alert ID: ..." lines
        return [int(line.split()[2].rstrip(":")) for line in said]

    def tree(self, rows: list[VersionRow]) -> list[int]:
        return self.night("uploads", "directory", "uploads", rows)

    def db(self, rows: dict[str, int]) -> list[int]:
        return self.night("maindb", "postgresql", "shop", rows)

    def alerts(self) -> list[str]:
        return [a.message for a in self.cat.alerts() if a.kind == "change_loss"]


def test_a_table_emptied_or_dropped_is_loss_and_ordinary_change_is_not() -> None:
    before = {"public.leads": 2400, "public.orders": 500, "public.tiny": 8}
    assert table_losses(before, {**before, "public.leads": 0}, POLICY) == [
        "table public.leads lost 100% of its rows (2400 -> 0)"
    ]
    dropped = {"public.leads": 2400, "public.tiny": 8}
    assert table_losses(before, dropped, POLICY) == [
        "table public.orders dropped (it had 500 rows)"
    ]
    normal = {"public.leads": 2600, "public.orders": 260, "public.tiny": 0, "public.new": 5}
    assert table_losses(before, normal, POLICY) == []  # grew, lost 48%, too small to judge
    renamed = {"public.leads_v2": 2400, "public.orders": 500, "public.tiny": 8}
    assert table_losses(before, renamed, POLICY) == []  # a rename, or a migration's copy
    halved = {"public.leads_v2": 1200, "public.orders": 500, "public.tiny": 8}
    assert table_losses(before, halved, POLICY) == ["table public.leads dropped (it had 2400 rows)"]
    bigger = {"public.audit_log": 50_000, "public.orders": 500, "public.tiny": 8}
    assert table_losses(before, bigger, POLICY) == ["table public.leads dropped (it had 2400 rows)"]
    both = {"public.leads_v2": 2400, "public.orders": 500, "public.tiny": 8}
    one_for_two = {**before, "public.orders": 2400}  # one new table cannot stand for two
    assert table_losses(
        one_for_two, {k: v for k, v in both.items() if k != "public.orders"}, POLICY
    ) == ["table public.orders dropped (it had 2400 rows)"]
    sessions = ChangesConfig(ignore_tables=("public.lead*",))
    assert table_losses(before, {**before, "public.leads": 0}, sessions) == []
    assert table_losses(None, {"public.leads": 0}, POLICY) == []  # nothing known before


def test_a_tree_60_percent_deleted_raises_one_alert_and_holds_the_night_before(
    tmp_path: Path,
) -> None:
    fleet = Fleet(tmp_path)
    assert fleet.tree(files(200)) == []  # the first night has nothing to lose
    assert fleet.tree(files(200)) == []
    [flag] = fleet.tree(files(80))
    [alert] = fleet.alerts()
    assert "web1/uploads: uploads: looks like loss, not change: 60% of its files gone" in alert
    assert "60% of its bytes gone (195.3 KiB -> 78.1 KiB)" in alert
    assert alert.endswith(
        f"prune keeps {fleet.nights['uploads'][1]} until acknowledged (backupctl alerts ack {flag})"
    )
    assert fleet.cat.held_archives("/store/web1") == {fleet.nights["uploads"][1]: flag}
    assert fleet.tree(files(80)) == []  # the wiped tree stays wiped: no new alert
    view, done = acknowledge(fleet.ctx, flag, "on purpose")
    assert done and view.held.name == fleet.nights["uploads"][1]
    assert fleet.cat.held_archives("/store/web1") == {}
    assert acknowledge(fleet.ctx, flag, None)[1] is False  # already: said, not an error
    with pytest.raises(NotFoundError, match="no change alert 99 \\(none open\\)"):
        acknowledge(fleet.ctx, 99, None)


def test_ordinary_churn_moves_and_touches_stay_silent(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.tree(files(200))
    churn = files(190) + files(30, prefix="new/")  # 5% deleted, 30 added
    churn[:20] = files(20, content="edited")  # 10% edited
    assert fleet.tree(churn) == []
    moved = files(220, prefix="photos/2026/")  # the whole tree renamed: same contents
    moved[190:] = files(30, prefix="photos/new/")
    moved[:20] = files(20, prefix="photos/2026/", content="edited")
    assert fleet.tree(moved) == []
    touched = [VersionRow(r.path, r.type, r.size, 0o600, 0, 0, 1, r.sha256) for r in moved]
    assert fleet.tree(touched) == []  # modes, owners, mtimes: not content
    assert fleet.alerts() == []
    (tmp_path / "small").mkdir()
    small = Fleet(tmp_path / "small")
    small.tree(files(99))
    assert small.tree(files(1)) == []  # a tree under min_files is not judged


def test_encrypted_in_place_renamed_or_truncated_trees_are_loss(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.tree(files(200))
    [_] = fleet.tree(files(200, content="encrypted"))  # same paths, new content
    assert "100% of its files rewritten at once (200 of 200)" in fleet.alerts()[-1]
    assert fleet.tree(files(200)) == []  # restored
    locked = [
        VersionRow(r.path + ".locked", "f", r.size, 0o644, 33, 33, 1, sha(f"{r.path}x"))
        for r in files(200)
    ]
    [_] = fleet.tree(locked)  # renamed and encrypted: the old contents are nowhere
    assert "100% of its files gone (200 of 200; 200 files now)" in fleet.alerts()[-1]
    assert fleet.tree(files(200)) == []  # restored
    [_] = fleet.tree(files(200, prefix="img/", size=0))  # truncated: files kept, bytes not
    assert "100% of its bytes gone (195.3 KiB -> 0 B)" in fleet.alerts()[-1]
    assert len(fleet.alerts()) == 3


def test_a_database_night_and_the_switch(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.db({"public.leads": 2400, "public.orders": 500})
    assert fleet.db({"public.leads": 2500, "public.orders": 450}) == []
    [flag] = fleet.db({"public.leads": 0, "public.orders": 450})
    assert fleet.cat.held_archives("/store/web1") == {fleet.nights["maindb"][1]: flag}
    assert "table public.leads lost 100% of its rows (2500 -> 0)" in fleet.alerts()[0]

    (tmp_path / "quiet").mkdir()
    quiet = Fleet(tmp_path / "quiet", extra="[changes]\nenabled = false\n")
    quiet.db({"public.leads": 2400})
    assert quiet.db({"public.leads": 0}) == [] and quiet.alerts() == []


def test_the_report_names_an_open_change_alert_as_a_problem_until_acked(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    fleet.db({"public.leads": 2400})
    [flag] = fleet.db({"public.leads": 0})
    period = {"now": NIGHT + timedelta(days=3), "start": NIGHT}
    data = gather(fleet.ctx, **period)
    [line] = [why for _, why in data.problems if "change alert" in why]
    assert line == (
        f"web1/maindb: change alert {flag}: shop looks like loss: table public.leads lost "
        f"100% of its rows (2400 -> 0) ({fleet.nights['maindb'][0]} kept until "
        f"`backupctl alerts ack {flag}`)"
    )
    assert data.verdict == "fail"
    acknowledge(fleet.ctx, flag, "a re-import")
    data = gather(fleet.ctx, **period)
    assert not [why for _, why in data.problems if "change alert" in why]
    [maindb] = [s for s in data.sources if s.name == "web1/maindb"]
    [line] = [f for f in maindb.failures if f"change alert {flag}" in f]
    assert "(acknowledged by " in line and line.endswith(": a re-import)")


def test_the_nights_of_a_recovery_are_no_second_loss(tmp_path: Path) -> None:
    """Files born on a night flagged as loss (the encrypted copies) may go or change
    without a new alert: restoring the originals over them, then deleting them."""
    fleet = Fleet(tmp_path)
    fleet.tree(files(200))
    [_] = fleet.tree(files(200, content="encrypted"))  # encrypted in place
    assert fleet.tree(files(200)) == []  # the originals restored over them
    locked = [
        VersionRow(r.path + ".locked", "f", r.size, 0o644, 33, 33, 1, sha(f"{r.path}x"))
        for r in files(200)
    ]
    [_] = fleet.tree(locked)  # renamed and encrypted
    assert fleet.tree(locked + files(200)) == []  # the originals restored beside them
    assert fleet.tree(files(200)) == []  # and the encrypted copies deleted
    assert len(fleet.alerts()) == 2


def test_a_source_changes_table_overrides_only_the_keys_it_gives(tmp_path: Path) -> None:
    extra = (
        "[changes]\nmin_rows = 10\nrows_lost = 0.2\n"
        '[hosts.web1.sources.maindb.changes]\nignore_tables = ["public.sessions"]\n'
    )
    fleet = Fleet(tmp_path, extra=extra)
    maindb = fleet.ctx.config.changes_for(fleet.ctx.config.source("web1", "maindb"))
    assert (maindb.min_rows, maindb.rows_lost, maindb.ignore_tables) == (
        10,
        0.2,
        ("public.sessions",),
    )
    fleet.db({"public.sessions": 40, "public.leads": 40})
    [_] = fleet.db({"public.sessions": 0, "public.leads": 30})  # 25% of 40 leads
    assert (
        "public.sessions" not in fleet.alerts()[0] and "public.leads lost 25%" in fleet.alerts()[0]
    )


def test_diff_does_not_call_a_file_restored_as_it_was_changed(tmp_path: Path) -> None:
    """Deleted one night, restored identical the next: a new version row with the same
    content and metadata. diff across both nights shows it unchanged (found in a
    new-user trial: it showed every restored file as ~)."""
    fleet = Fleet(tmp_path)
    fleet.tree(files(200))
    fleet.tree(files(50))
    fleet.tree(files(200))
    when = [NIGHT + timedelta(days=n) for n in (1, 3)]
    [row] = diff_source(fleet.ctx, "web1/uploads", since=when[0], until=when[1])
    assert row["files"] == {"added": [], "removed": [], "changed": []}
    [last] = diff_source(fleet.ctx, "web1/uploads")
    assert len(last["files"]["added"]) == 150 and last["files"]["changed"] == []
