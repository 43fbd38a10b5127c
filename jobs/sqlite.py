"""SQLite: a consistent online copy made on the droplet, then streamed.

Never a raw copy of a file that may be being written. The copy is taken with
``VACUUM INTO`` (sqlite3 >= 3.27) inside ONE read transaction: in WAL mode writers carry
on and the copy still finishes; in rollback-journal mode writers wait for the copy. The
sqlite3 CLI's ``.backup`` is only the fallback for older droplets: it copies in steps and
starts again whenever another connection commits, so under continuous writes it may never
finish (measured: 100 % CPU for minutes). Either way a watchdog on the droplet stops a
copy that has not grown for ``stall_timeout`` and says why, long before the stream's idle
timeout; while the copy grows it reports progress, which keeps the stream's idle timer
from firing on a large database. The copy is integrity-checked, its tables counted (facts
on stderr), streamed, and removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import PurePosixPath

from pydantic import Field

from backupd.config.units import Duration
from backupd.errors import DumpError
from jobs.base import (
    DATABASE_CHUNKER,
    DumpStream,
    ExecOptions,
    Held,
    RemoteShell,
    Unit,
    nothing_held,
    path_gone,
    slug,
)
from jobs.gating import GateRequest

EXIT_STALLED = 75  # EX_TEMPFAIL: the copy made no progress; a later try may succeed

# Runs on the droplet as: sh -c SCRIPT backupd-sqlite SQLITE3 DBPATH STALL_SECONDS.
# Everything arrives as positional parameters, never interpolated into the script text;
# the copy's path (made by mktemp) reaches SQL as a literal with its quotes doubled.
SCRIPT = r"""
set -eu
sqlite=$1 db=$2 stall=$3
[ -f "$db" ] || { echo "no such database file: $db" >&2; exit 66; }
[ -r "$db" ] || { echo "cannot read the database file: $db (permission denied)" >&2; exit 77; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/backupd-sqlite.XXXXXXXX")
copy=$dir/copy.db
pid= watch=
trap 'kill $pid $watch 2>/dev/null || true; rm -rf "$dir"' EXIT
trap 'exit 143' INT TERM HUP
version=$("$sqlite" -version | cut -d' ' -f1)
major=${version%%.*} rest=${version#*.}
minor=${rest%%.*}
method=vacuum-into
if [ "$major" -lt 3 ] || { [ "$major" -eq 3 ] && [ "$minor" -lt 27 ]; }; then method=backup; fi
# the busy timeout outlasts the watchdog: a lock held for good is reported as a stall
wait_ms=$(( (stall + 30) * 1000 ))
if [ "$method" = vacuum-into ]; then
  literal=$(printf '%s' "$copy" | sed "s/'/''/g")
  "$sqlite" "$db" ".timeout $wait_ms" "VACUUM INTO '$literal';" &
else
  "$sqlite" "$db" ".timeout $wait_ms" ".backup '$copy'" &
fi
pid=$!
(
  best=-1 still=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    size=0
    if [ -f "$copy" ]; then size=$(wc -c < "$copy"); fi
    if [ "$size" -gt "$best" ]; then
      best=$size still=0
      echo "backupd-progress $size" >&2
    else
      still=$((still + 1))
    fi
    if [ "$still" -ge "$stall" ]; then
      echo "$size" > "$dir/stalled"
      kill "$pid" 2>/dev/null || true
      exit 0
    fi
  done
) &
watch=$!
status=0
wait "$pid" || status=$?
kill "$watch" 2>/dev/null || true
wait "$watch" 2>/dev/null || true
pid= watch=
if [ -f "$dir/stalled" ] && [ "$status" -ne 0 ]; then
  size=$(cat "$dir/stalled")
  if [ "$method" = backup ]; then
    why="sqlite3 $version has no VACUUM INTO (3.27 or newer): its .backup starts again"
    why="$why whenever the database is written"
  elif [ "$size" -eq 0 ]; then
    why="the copy could not start: another connection holds the database locked"
    why="$why (a long write transaction?)"
  else
    why="the copy stopped growing at $size bytes"
  fi
  echo "sqlite3 $method made no progress for ${stall}s: stopped; $why" >&2
  exit 75
fi
[ "$status" -eq 0 ] || { echo "sqlite3 $method of $db failed (exit $status)" >&2; exit "$status"; }
check=$("$sqlite" "$copy" "PRAGMA quick_check;")
[ "$check" = ok ] || { echo "integrity check of the copy failed: $check" >&2; exit 65; }
tables="SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%';"
"$sqlite" "$copy" "$tables" |
while IFS= read -r t; do
  q=$(printf '%s' "$t" | sed 's/"/""/g')
  n=$("$sqlite" "$copy" "SELECT count(*) FROM \"$q\";")
  printf 'backupd-fact rows %s %s\n' "$n" "$t" >&2
done
printf 'backupd-fact bytes %s\n' "$(wc -c < "$copy")" >&2
printf 'backupd-fact method %s\n' "$method" >&2
cat "$copy"
"""


class SQLiteOptions(ExecOptions):
    path: str  # the database file on the droplet (absolute)
    sqlite3: str = "sqlite3"
    # a copy that has not grown for this long is stopped (a lock held for good, or the
    # old .backup restarting under writes): far sooner than the stream's idle_timeout
    stall_timeout: Duration = Field(default=60.0, ge=2.0)


class SQLite:
    name = "sqlite"
    options_model = SQLiteOptions

    def plan(self, options: SQLiteOptions, remote: RemoteShell) -> Sequence[Unit]:
        """One stream; the file is looked for first, so `config check` (which plans) does
        not pass a source whose database is not there."""
        look = remote.run((*options.exec_prefix(), "test", "-f", options.path), timeout=60.0)
        if look.exit_status == 1:
            raise DumpError(f"no such database file: {options.path} (on the droplet)")
        stem = PurePosixPath(options.path).name
        return [
            DumpStream(
                item=stem,
                filename=f"{slug(stem)}.sqlite",
                tool="sqlite3 online copy",
                chunker_params=DATABASE_CHUNKER,
                programs=(options.sqlite3,),
                argv=_copy_argv(options),
            )
        ]

    def gate_requests(self, options: SQLiteOptions, source: str) -> list[GateRequest]:
        """What this source asks of a gated droplet (decision 0022): whether its file is
        there, and the online copy, all fixed by the config (the script is the gate's)."""
        prefix = options.exec_prefix()
        return [
            GateRequest(
                f"{source}: look for the database file", (*prefix, "test", "-f", options.path)
            ),
            GateRequest(
                f"{source}: is the database file gone", (*prefix, "test", "-e", options.path)
            ),
            GateRequest(f"{source}: online copy of the database", _copy_argv(options)),
        ]

    def hold(
        self, options: SQLiteOptions, stream: DumpStream, remote: RemoteShell
    ) -> AbstractContextManager[Held]:
        return nothing_held()

    def vanished(self, options: SQLiteOptions, unit: Unit, remote: RemoteShell) -> bool:
        return path_gone(remote, options.exec_prefix(), options.path)

    def droplet_setup(self, options: SQLiteOptions, source: str, login: str) -> list[str]:
        return []  # the login reads what it backs up: the operator's to grant


def _copy_argv(options: SQLiteOptions) -> tuple[str, ...]:
    return (
        *options.exec_prefix(),
        "sh",
        "-c",
        SCRIPT,
        "backupd-sqlite",
        options.sqlite3,
        options.path,
        str(int(options.stall_timeout)),
    )


KIND = SQLite()
