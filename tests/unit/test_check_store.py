"""config check's store line: a store the first backup will make is not a failure (a
false alarm on every new install, found by a new-user trial); one that cannot be made is."""

from __future__ import annotations

from pathlib import Path

from backupd.actions.check import check_store
from backupd.actions.context import Context
from backupd.borg.space import StoreDisk
from jobs.registry import load_config
from tests.harness.example_report import write_config


def store_line(tmp_path: Path) -> tuple[bool, bool, str]:
    ctx = Context(load_config(write_config(tmp_path, {"web1": {"app": "sqlite"}})))
    [found] = check_store(ctx)
    return found.ok, found.warning, found.detail


def test_a_store_not_made_yet_is_a_warning_saying_the_first_backup_makes_it(
    tmp_path: Path,
) -> None:
    ok, warning, detail = store_line(tmp_path)
    assert ok and warning, detail
    assert detail.startswith(f"{tmp_path / 'store'}: not there yet, the first backup makes it (")
    assert "free of" in detail and f"in {tmp_path})" in detail and "mount it there first" in detail


def test_a_store_there_says_its_room(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    ok, warning, detail = store_line(tmp_path)
    disk = StoreDisk.of(tmp_path / "store")
    assert ok and warning == (disk.free / disk.size < 0.10), detail  # this machine's disk
    assert detail.startswith(f"{tmp_path / 'store'}: ") and " free of " in detail


def test_a_store_that_cannot_be_made_fails(tmp_path: Path) -> None:
    (tmp_path / "store").write_text("a file where the store should be")
    ok, _, detail = store_line(tmp_path)
    assert not ok and "store is not a directory" in detail, detail
