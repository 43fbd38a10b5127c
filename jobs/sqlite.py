"""SQLite: a consistent online copy made on the droplet with ``.backup``, then streamed.

Never a raw copy of a file that may be being written: sqlite3's online backup API copies
a consistent snapshot into a private temp file next to nothing else; that copy is
integrity-checked, its tables counted (facts on stderr), streamed, and removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import PurePosixPath

from jobs.base import DumpStream, ExecOptions, Held, RemoteShell, Unit, nothing_held, slug

# Runs on the droplet as: sh -c SCRIPT backupd-sqlite SQLITE3 DBPATH. Both arrive as
# positional parameters, never interpolated into the script text.
SCRIPT = r"""
set -eu
sqlite=$1 db=$2
[ -f "$db" ] || { echo "no such database file: $db" >&2; exit 66; }
tmp=$(mktemp "${TMPDIR:-/tmp}/backupd-sqlite.XXXXXXXX")
trap 'rm -f "$tmp"' EXIT
trap 'exit 143' INT TERM HUP
"$sqlite" "$db" ".timeout 60000" ".backup '$tmp'"
check=$("$sqlite" "$tmp" "PRAGMA quick_check;")
[ "$check" = ok ] || { echo "integrity check of the copy failed: $check" >&2; exit 65; }
tables="SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%';"
"$sqlite" "$tmp" "$tables" |
while IFS= read -r t; do
  q=$(printf '%s' "$t" | sed 's/"/""/g')
  n=$("$sqlite" "$tmp" "SELECT count(*) FROM \"$q\";")
  printf 'backupd-fact rows %s %s\n' "$n" "$t" >&2
done
printf 'backupd-fact bytes %s\n' "$(wc -c < "$tmp")" >&2
cat "$tmp"
"""


class SQLiteOptions(ExecOptions):
    path: str  # the database file on the droplet (absolute)
    sqlite3: str = "sqlite3"


class SQLite:
    name = "sqlite"
    options_model = SQLiteOptions

    def plan(self, options: SQLiteOptions, remote: RemoteShell) -> Sequence[Unit]:
        stem = PurePosixPath(options.path).name
        return [
            DumpStream(
                item=stem,
                filename=f"{slug(stem)}.sqlite",
                tool="sqlite3 .backup",
                argv=(
                    *options.exec_prefix(),
                    "sh",
                    "-c",
                    SCRIPT,
                    "backupd-sqlite",
                    options.sqlite3,
                    options.path,
                ),
            )
        ]

    def hold(
        self, options: SQLiteOptions, stream: DumpStream, remote: RemoteShell
    ) -> AbstractContextManager[Held]:
        return nothing_held()


KIND = SQLite()
