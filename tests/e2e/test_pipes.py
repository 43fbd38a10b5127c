"""Output to a reader that went away ends quietly, as Unix tools do (issue 11, case 7):
``backupctl archives web1 | head -5`` must not print ``internal error: BrokenPipeError``."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, Deployment
from tests.harness.droplet import Droplet

pytestmark = pytest.mark.e2e
EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell shows for a tool whose reader went away


@pytest.fixture(scope="module")
def backed_up(module_deploy: Callable[..., Deployment], droplet: Droplet) -> Deployment:
    path = droplet.root / "pipes" / "notes.db"
    path.parent.mkdir(exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", droplet.user, str(path.parent)], check=True)
    d = module_deploy({"notes": {"kind": "sqlite", "path": str(path)}})
    d.backupctl("backup", "now", "web1", check=True)
    return d


def into_closed_pipe(d: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    """Run backupctl with its stdout on a pipe whose reader is already gone: the first
    write fails, every time (no race with how much a reader would have taken)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [str(BIN / "backupctl"), "--config", str(d.config), *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "args",
    [("archives", "web1"), ("runs", "--json"), ("status",), ("--help",)],
    ids=["archives", "runs-json", "status", "help"],
)
def test_a_closed_pipe_ends_quietly(backed_up: Deployment, args: tuple[str, ...]) -> None:
    result = into_closed_pipe(backed_up, *args)
    assert result.stderr == ""
    # click ends its own help output on a closed pipe with 1; our commands with 141
    assert result.returncode == (1 if args == ("--help",) else EXIT_PIPE)


def test_head_through_a_shell_pipeline(backed_up: Deployment, tmp_path: Path) -> None:
    """The case as typed: what head shows is the table's first lines, and nothing on stderr."""
    script = (
        f"{BIN / 'backupctl'} --config {backed_up.config} archives web1 | head -1; "
        "exit ${PIPESTATUS[0]}"
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
    assert result.stdout.startswith("ARCHIVE")
    assert result.stderr == ""
    assert result.returncode in (0, EXIT_PIPE)  # 0 when it all fitted before head left
