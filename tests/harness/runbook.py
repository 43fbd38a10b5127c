"""Real transcripts for docs/restore-runbook.md: `python -m tests.harness.runbook`.

Starts the demo sandbox (tests/harness/demo.py), backs it up once, then runs every restore
case of the runbook and prints each command with its real output, as Markdown, to
var/runbook-transcript.md. Paste the parts you change into the runbook.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.harness.demo import BIN, ROOT, VAR, sandbox
from tests.harness.procs import wait_until


def main() -> int:
    out: list[str] = []
    with sandbox(extra=targets_placeholder()) as box:
        pg, maria = box.cluster, box.mariadb
        box.config.write_text(
            box.config.read_text()
            .replace("@PG_SOCKET@", str(pg.socket_dir))
            .replace("@PG_PORT@", str(pg.port))
            .replace("@MARIADB_SOCKET@", str(maria.socket))
        )
        env = {**os.environ, "BACKUPD_CONFIG": str(box.config), "COLUMNS": "100"}
        subprocess.run(
            [str(BIN / "backupd"), "--once"], env=env, check=True, cwd=ROOT, capture_output=True
        )
        pushed = box.droplet.root / "srv" / "uploads-restored"
        for line in COMMANDS:
            out += transcript([a.replace("@PUSHED@", str(pushed)) for a in line], env)
        with operator_lock(VAR / "store" / "demo", env):
            out += transcript(["backupctl", "restore", "demo/appdb", "--to", "var/restore-l"], env)
    (VAR / "runbook-transcript.md").write_text("\n".join(out))
    print(f"wrote {VAR / 'runbook-transcript.md'}")
    return 0


def transcript(argv: list[str], env: dict[str, str]) -> list[str]:
    """One command and its real output as a Markdown block (with the exit code if not 0)."""
    result = subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    shown = " ".join(f'"{a}"' if " " in a else a for a in argv)
    out = ["```", f"$ {shown}", (result.stdout + result.stderr).rstrip()]
    if result.returncode:
        out.append(f"$ echo $?\n{result.returncode}")
    return [*out, "```", ""]


@contextmanager
def operator_lock(repo: Path, env: dict[str, str]) -> Iterator[None]:
    """A session an operator forgot: ``borg with-lock REPO sleep 600``, ended afterwards."""
    borg_env = {
        **env,
        "BORG_BASE_DIR": str(VAR / "operator-borg"),
        "BORG_PASSCOMMAND": f"cat {VAR / 'demo-passphrase'}",
    }
    holder = subprocess.Popen(
        [str(BIN / "borg"), "with-lock", str(repo), "sleep", "600"],
        env=borg_env,
        start_new_session=True,
    )
    try:
        mine = f".{holder.pid}-0"
        wait_until(
            lambda: any(n.endswith(mine) for n in _names(repo / "lock.exclusive")),
            60,
            "borg with-lock to hold the lock",
        )
        yield
    finally:
        os.killpg(holder.pid, signal.SIGTERM)
        holder.wait(timeout=60)


def _names(directory: Path) -> list[str]:
    return os.listdir(directory) if directory.is_dir() else []


def targets_placeholder() -> str:
    return """[restore_targets.staging]
kind = "postgresql"
socket_dir = "@PG_SOCKET@"
port = @PG_PORT@
username = "postgres"

[restore_targets.mstaging]
kind = "mariadb"
socket = "@MARIADB_SOCKET@"
username = "root"
"""


COMMANDS: list[list[str]] = [
    ["backupctl", "status"],
    ["backupctl", "archives", "demo/appdb"],
    ["backupctl", "restore", "demo/appdb", "--to", "var/restore", "--dry-run"],
    ["backupctl", "restore", "demo/appdb", "--to", "var/restore"],
    ["backupctl", "restore", "demo/appdb", "--to", "var/restore"],
    ["backupctl", "restore", "demo/appdb", "--to", "var/restore-old", "--at", "2001-01-01 00:00"],
    ["backupctl", "restore", "demo/appdb", "--to", "var/restore-x", "--archive", "appdb.app.nope"],
    [
        "backupctl",
        "restore",
        "demo/appdb",
        "--into-db",
        "staging",
        "--as",
        "app_restored",
        "--dry-run",
    ],
    ["backupctl", "restore", "demo/appdb", "--into-db", "staging", "--as", "app_restored"],
    ["backupctl", "restore", "demo/appdb", "--into-db", "staging", "--as", "app_restored"],
    [
        "backupctl",
        "restore",
        "demo/appdb",
        "--into-db",
        "staging",
        "--as",
        "app_restored",
        "--force",
    ],
    [
        "backupctl",
        "restore",
        "demo/appdb",
        "--into-db",
        "staging",
        "--as",
        "learners_only",
        "--table",
        "learners",
    ],
    ["backupctl", "restore", "demo/forumdb", "--into-db", "mstaging", "--as", "forum_restored"],
    [
        "backupctl",
        "restore",
        "demo/forumdb",
        "--into-db",
        "mstaging",
        "--as",
        "posts_only",
        "--table",
        "posts",
    ],
    ["backupctl", "restore", "demo/appdb", "--to-host", "demo", "--database", "app_from_backup"],
    [
        "backupctl",
        "restore",
        "demo/appdb",
        "--to-host",
        "demo",
        "--database",
        "app_from_backup",
        "--yes",
    ],
    ["backupctl", "restore", "demo/uploads", "--to", "var/uploads"],
    ["backupctl", "restore", "demo/uploads", "--to-host", "demo", "--path", "@PUSHED@", "--yes"],
    ["backupctl", "restore", "demo/uploads", "--to-host", "demo", "--path", "@PUSHED@", "--yes"],
    ["backupctl", "runs", "--limit", "3"],
]

if __name__ == "__main__":
    sys.exit(main())
