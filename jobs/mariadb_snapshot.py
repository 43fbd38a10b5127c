"""The droplet side of a MariaDB dump: ``mariadb-dump`` plus row counts taken by the
server inside the dump's own snapshot (docs/decisions/0017).

MariaDB cannot hand a snapshot to another session, so two snapshots are made equal: a
lock session blocks commits (``BACKUP STAGE BLOCK_COMMIT``, what mariadb-backup uses),
a count session starts ``START TRANSACTION WITH CONSISTENT SNAPSHOT``, then
mariadb-dump starts its own; ``--verbose`` tells on stderr the moment its transaction
has begun (the first line after ``-- Starting transaction...``), and the lock session
is killed at once. No commit happened between the two snapshots, so they hold the same
rows. The count session then counts every table while the dump runs. The block is
capped on the server (``DO SLEEP(wait)``): if backupd or the link dies, commits resume
after ``wait`` seconds at the latest. A block that cannot be taken (no RELOAD
privilege, a long DDL) or a dump slower than ``wait`` to start means no counts and a
warning; the dump itself is never failed for it.

Everything reaches the script as positional parameters; names reach SQL only as hex
literals built here, never through the shell.
"""

from __future__ import annotations

SCRIPT = r"""
set -eu
client=$1 dump=$2 db=$3 wait=$4 mode=$5 secret=$6 definers=$7 block=$8 snapshot=$9
shift 9
counts=$1
shift
tab=$(printf '\t')
dir=$(mktemp -d "${TMPDIR:-/tmp}/backupd-mariadb.XXXXXXXX")
lpid= lid= apid= dpid= tick=
warn() { printf 'backupd-fact warning %s\n' "$*" >&2; }
tail_of() { grep -v '^-*$' "$dir/$1" 2>/dev/null | tail -n 1 | cut -c1-300; }  # its error line
now_ms() {  # 0 where date has no %N (busybox)
  n=$(date +%s%N 2>/dev/null) || n=
  case $n in *[!0-9]*|'') echo 0;; *) echo $((n / 1000000));; esac
}
cleanup() {
  if [ -n "$lpid" ] && [ -n "$lid" ] && kill -0 "$lpid" 2>/dev/null; then
    "$client" "$@" --batch -e "KILL $lid" </dev/null >/dev/null 2>&1 || true
  fi
  [ -z "$tick" ] || kill -KILL "$tick" 2>/dev/null || true
  for p in $dpid $apid $lpid; do kill "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap 'cleanup "$@"' EXIT
trap 'exit 143' INT TERM HUP
trap '' PIPE  # a count session that died must not take the script (and the dump) with it
to_session() { printf '%s\n' "$1" >&3 2>/dev/null || true; }
if [ "$secret" = 1 ]; then
  (umask 077 && cat >"$dir/client.cnf")
  set -- "--defaults-extra-file=$dir/client.cnf" "$@"
fi
# the database's character set and collation (facts), then objects whose definer is
# gone (said now, loaded as the restoring login later)
"$client" "$@" --batch --skip-column-names -e "$definers" </dev/null 2>/dev/null |
  while IFS= read -r line; do
    case $line in "backupd-fact "*) printf '%s\n' "$line" >&2;; *) warn "$line";; esac
  done
session=0
if [ "$mode" = count ]; then
  mkfifo "$dir/lock" "$dir/in" "$dir/out"
  "$client" "$@" --batch --skip-column-names --unbuffered -e "$block" \
    </dev/null >"$dir/lock" 2>"$dir/lock.err" &
  lpid=$!
  exec 5<"$dir/lock"
  if IFS="$tab" read -r word lid <&5 && [ "$word" = backupd-blocked ]; then
    case $lid in ''|*[!0-9]*) echo "backupd: bad lock session id" >&2; exit 70;; esac
    blocked=$(now_ms)
    "$client" "$@" --batch --skip-column-names --unbuffered \
      <"$dir/in" >"$dir/out" 2>"$dir/session.err" 5<&- &
    apid=$!
    exec 3>"$dir/in" 4<"$dir/out"
    to_session "$snapshot"
    if IFS= read -r line <&4 && [ "$line" = backupd-snapshot ]; then
      session=1
    else
      warn "rows not counted: the count session failed: $(tail_of session.err)"
      exec 3>&- 4<&-
      wait "$apid" || true
      apid=
      "$client" "$@" --batch -e "KILL $lid" </dev/null >/dev/null 2>&1 || true
    fi
  else
    lid=
    warn "rows not counted: commits could not be blocked for the snapshot" \
      "(BACKUP STAGE needs the RELOAD privilege): $(tail_of lock.err)"
  fi
  exec 5<&-
fi
counted=0
release() {  # $1: taken (the dump's snapshot exists) or not; then the connection options
  how=$1
  shift
  [ -n "$lid" ] || return 0
  held=0 ended=0
  if [ -n "$apid" ]; then
    if [ "$how" = taken ]; then
      to_session "SELECT 'backupd-held', COUNT(*) FROM information_schema.PROCESSLIST \
        WHERE ID = $lid;"
      IFS="$tab" read -r word held <&4 || held=0
    fi
    to_session "KILL $lid; SELECT 'backupd-released';"
    if IFS= read -r ack <&4 && [ "$ack" = backupd-released ]; then ended=1; else held=0; fi
  fi
  if [ "$ended" = 0 ]; then  # no count session ended the block: end it from here
    "$client" "$@" --batch -e "KILL $lid" </dev/null >/dev/null 2>&1 || true
  fi
  if [ "$held" = 1 ]; then
    to_session "$counts"
    counted=1
    printf 'backupd-fact commit_block_ms %s\n' "$(( $(now_ms) - blocked ))" >&2
  elif [ "$how" = taken ] && [ -n "$apid" ]; then
    warn "rows not counted: $dump took longer than ${wait}s to start its snapshot" \
      "(commits are blocked at most that long), or the count session failed:" \
      "$(tail_of session.err)"
  fi
  exec 3>&-
  wait "$lpid" || true
  lpid= lid=
}
mkfifo "$dir/err"
run_dump() {  # one process (a function run in the background, then exec): killable by $!
  trap - PIPE
  exec "$dump" "$@" --single-transaction --routines --events --triggers --hex-blob \
    --default-character-set=utf8mb4 --verbose -- "$db"
}
run_dump "$@" </dev/null 2>"$dir/err" 3>&- 4<&- &
dpid=$!
state=waiting
while IFS= read -r line; do
  case $line in "-- Starting transaction..."*) state=starting; continue;; esac
  if [ "$state" = starting ]; then state=taken; release taken "$@"; fi
  case $line in "-- "*) ;; *) printf '%s\n' "$line" >&2;; esac
done <"$dir/err"
if [ "$state" != taken ]; then release not "$@"; fi
status=0
wait "$dpid" || status=$?
dpid=
[ "$status" -eq 0 ] || exit "$status"
if [ "$state" != taken ] && [ "$session" = 1 ]; then
  warn "rows not counted: $dump did not report its snapshot (--verbose)"
fi
if [ -n "$apid" ]; then
  ticker() {  # the stream's idle timer hears these while the counts finish
    while [ -d "$dir" ]; do
      sleep 5 </dev/null >/dev/null 2>&1
      echo "backupd-progress counting" >&2
    done
  }
  ticker </dev/null >/dev/null 3>&- 4<&- &
  tick=$!
  : >"$dir/facts"
  complete=0
  while IFS= read -r line <&4; do
    case $line in
      "backupd-fact "*) printf '%s\n' "$line" >>"$dir/facts";;
      backupd-counted) complete=1;;
    esac
  done
  # KILL, not TERM: TERM would run its inherited trap only after its sleep, and until
  # then it holds stderr open (the stream's reader waits for that)
  kill -KILL "$tick" 2>/dev/null || true
  tick=
  wait "$apid" || true
  apid=
  if [ "$complete" = 1 ]; then
    cat "$dir/facts" >&2
  elif [ "$counted" = 1 ]; then
    warn "rows not counted: $(tail_of session.err)"
  fi
fi
"""


def hex_literal(text: str) -> str:
    """A SQL literal for ``text`` that no sql_mode or character can change: X'...'."""
    return f"X'{text.encode().hex()}'"


def _ident_expr(name: str) -> str:
    """A SQL expression whose value is ``name`` quoted as an identifier (for dynamic SQL)."""
    return f"CONCAT('`', REPLACE(CONVERT({hex_literal(name)} USING utf8mb4), '`', '``'), '`')"


def properties_sql(db: str) -> str:
    """``backupd-fact database_charset CS`` and ``database_collation CO`` lines: the
    database's defaults, which a restore recreates (tables carry their own in the dump)."""
    where = f"FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {hex_literal(db)}"
    return (
        f"SELECT CONCAT('backupd-fact database_charset ', DEFAULT_CHARACTER_SET_NAME) "
        f"{where} UNION ALL SELECT CONCAT('backupd-fact database_collation ', "
        f"DEFAULT_COLLATION_NAME) {where}"
    )


def before_dump_sql(db: str) -> str:
    """Asked before the dump: the database's properties first (a login that cannot read
    mysql.user fails the definers query, and the client stops at the first error)."""
    return f"{properties_sql(db)}; {definers_sql(db)}"


def definers_sql(db: str) -> str:
    """One line per definer that no longer exists, naming the objects it defined."""
    lit = hex_literal(db)
    return (  # names only as hex literals
        "SELECT CONCAT(GROUP_CONCAT(CONCAT(o.kind, ' ', o.name) ORDER BY o.kind, o.name "  # noqa: S608
        "SEPARATOR ', '), ': definer ', o.definer, ' does not exist on the server (the "
        "object fails when used; restores load it with the restoring login as definer)') "
        "FROM (SELECT 'view' AS kind, TABLE_NAME AS name, DEFINER AS definer "
        f"FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {lit} "
        "UNION ALL SELECT 'trigger', TRIGGER_NAME, DEFINER FROM information_schema.TRIGGERS "
        f"WHERE TRIGGER_SCHEMA = {lit} "
        "UNION ALL SELECT LOWER(ROUTINE_TYPE), ROUTINE_NAME, DEFINER "
        f"FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {lit} "
        "UNION ALL SELECT 'event', EVENT_NAME, DEFINER FROM information_schema.EVENTS "
        f"WHERE EVENT_SCHEMA = {lit}) o "
        "WHERE CAST(o.definer AS BINARY) NOT IN "
        "(SELECT CAST(CONCAT(User, '@', Host) AS BINARY) FROM mysql.user) "
        "AND CAST(o.definer AS BINARY) NOT IN "
        "(SELECT CAST(User AS BINARY) FROM mysql.user WHERE Host = '') "
        "GROUP BY o.definer ORDER BY o.definer"
    )


def block_sql(wait: int) -> str:
    """The lock session: block commits, say so with its id, and hold at most ``wait`` s."""
    return (
        f"SET SESSION lock_wait_timeout = {wait}; BACKUP STAGE START; "
        "BACKUP STAGE BLOCK_COMMIT; SELECT 'backupd-blocked', CONNECTION_ID(); "
        f"DO SLEEP({wait});"
    )


SNAPSHOT_SQL = (
    "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ; "
    "START TRANSACTION WITH CONSISTENT SNAPSHOT; SELECT 'backupd-snapshot';"
)

# tables whose rows live in the snapshot; any other engine (MyISAM, Aria, MEMORY...) is
# read by mariadb-dump whenever it gets there, so its count is not compared on restore
SNAPSHOT_ENGINES = ("InnoDB",)
TABLE_TYPES = "('BASE TABLE', 'SYSTEM VERSIONED')"


def counts_sql(db: str) -> str:
    """Count every table of ``db`` in one statement (inside the count session's
    snapshot): ``backupd-fact rows-hex N HEXNAME`` lines, ``rows-outside-hex`` for
    tables of engines without snapshots; then end the transaction."""
    engines = ", ".join(f"'{e}'" for e in SNAPSHOT_ENGINES)
    part = (  # one SELECT per table, the name hex-encoded in its output
        "CONCAT('SELECT CONCAT(''backupd-fact ', "  # noqa: S608
        f"IF(ENGINE IN ({engines}), 'rows-hex', 'rows-outside-hex'), "
        "' '', COUNT(*), '' ', HEX(TABLE_NAME), ''') FROM ', "
        f"{_ident_expr(db)}, '.`', REPLACE(TABLE_NAME, '`', '``'), '`')"
    )
    return (  # names only as hex literals
        "SET SESSION group_concat_max_len = 4294967295; "  # noqa: S608
        f"SELECT GROUP_CONCAT({part} SEPARATOR ' UNION ALL ') INTO @backupd_q "
        f"FROM information_schema.TABLES WHERE TABLE_SCHEMA = {hex_literal(db)} "
        f"AND TABLE_TYPE IN {TABLE_TYPES}; "
        "SET @backupd_q = COALESCE(@backupd_q, 'SELECT 1 FROM DUAL WHERE FALSE'); "
        "PREPARE backupd_c FROM @backupd_q; EXECUTE backupd_c; DEALLOCATE PREPARE backupd_c; "
        "COMMIT; SELECT 'backupd-counted';"
    )
