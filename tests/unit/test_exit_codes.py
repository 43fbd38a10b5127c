"""backupctl's exit codes are a contract for scripts: the table in docs/backupctl.md lists
exactly the codes the code can exit with."""

from __future__ import annotations

import re
from pathlib import Path

from backupd import errors
from backupd.cli.common import EXIT_PIPE

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| (\d+) \| (.+) \|$", re.M)


def documented() -> dict[int, str]:
    text = (ROOT / "docs" / "backupctl.md").read_text()
    table = text.split("## ", 1)[0]  # the table above the first section
    return {int(code): meaning for code, meaning in ROW.findall(table)}


def error_codes() -> dict[int, list[str]]:
    """exit_code of every BackupdError subclass (and the base) -> class names."""
    found: dict[int, list[str]] = {}
    todo: list[type[errors.BackupdError]] = [errors.BackupdError]
    while todo:
        cls = todo.pop()
        if "exit_code" in vars(cls):  # a subclass that keeps its parent's code means the same
            found.setdefault(cls.exit_code, []).append(cls.__name__)
        todo += cls.__subclasses__()
    return found


def literal_exits() -> set[int]:
    """Codes backupctl's modules pass to sys.exit themselves (1 for a stale source, 70 for a
    bug)."""
    text = "".join(p.read_text() for p in (ROOT / "backupd" / "cli").glob("*.py"))
    return {int(n) for n in re.findall(r"sys\.exit\((\d+)\)", text)}


def test_the_documented_exit_codes_are_exactly_the_ones_backupctl_uses() -> None:
    click_usage = 2  # click's own usage errors (an unknown option) exit 2, like UsageError
    used = {0, click_usage, EXIT_PIPE} | set(error_codes()) | literal_exits()
    table = documented()
    assert {1, 70} <= literal_exits()
    assert sorted(table) == sorted(used), (
        f"documented but never used: {sorted(set(table) - used)}; "
        f"used but not documented: {sorted(used - set(table))}"
    )


def test_each_error_class_has_a_distinct_meaning_or_shares_a_documented_one() -> None:
    """Two classes share a code only where the table says both (2: configuration or
    argument)."""
    shared = {code: sorted(names) for code, names in error_codes().items() if len(names) > 1}
    assert shared == {2: ["ConfigError", "UsageError"]}
    meaning = documented()[2]
    assert "configuration" in meaning and "argument" in meaning
