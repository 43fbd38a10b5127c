"""PostgreSQL: one ``pg_dump`` custom-format stream per database, plus the cluster globals.

Custom format (``-Fc``) is what ``pg_restore`` restores selectively (one table, one
schema). Compression is left to Borg (``-Z0``) so unchanged rows deduplicate
(docs/benchmarks.md). Roles and tablespaces live outside every database: they come
from ``pg_dumpall --globals-only`` as a plain SQL stream.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pydantic import Field

from backupd.channel import Interactive
from backupd.errors import DumpError, RemoteError, RestoreError, UsageError
from backupd.units import Duration
from jobs.base import (
    DatabaseRestore,
    DumpStream,
    ExecOptions,
    Held,
    RemoteShell,
    StreamFilter,
    Unit,
    list_lines,
    slug,
)

if TYPE_CHECKING:
    from backupd.shells import CommandShell

LIST_TIMEOUT = 60.0
GLOBALS_ITEM = "_globals"
GLOBALS_MIN_BYTES = 64  # pg_dumpall's header alone is longer: less is a broken dump


class PostgresOptions(ExecOptions):
    databases: tuple[str, ...] = ()  # empty: every database that accepts connections
    globals: bool = True  # also pull roles and tablespaces (pg_dumpall --globals-only)
    socket_dir: str | None = None  # pg's --host; the droplet's default socket when unset
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str | None = None  # database role (--username)
    pg_dump: str = "pg_dump"
    pg_dumpall: str = "pg_dumpall"
    psql: str = "psql"
    pg_restore: str = "pg_restore"  # restores (--into-db, --to-host --database, drills)
    count_rows: bool = True  # exact row counts in the dump's own snapshot (reads every table)
    facts_timeout: Duration = 3600.0
    # a table locked by another session (a migration's ALTER TABLE) fails the dump after
    # this long, with the reason, instead of waiting out the stream's idle timeout
    lock_timeout: Duration = Field(default=120.0, ge=1.0)
    # the snapshot session waits in a transaction while pg_dump runs; backupd pings it, and
    # the server ends it after this long without a ping (backupd gone, link cut), giving
    # the snapshot back instead of blocking vacuum until the droplet's sshd notices
    session_timeout: Duration = Field(default=60.0, ge=4.0)

    def lock_timeout_ms(self) -> int:
        return int(self.lock_timeout * 1000)


class PostgreSQL:
    name = "postgresql"
    options_model = PostgresOptions

    def plan(self, options: PostgresOptions, remote: RemoteShell) -> Sequence[Unit]:
        databases = options.databases or self._list_databases(options, remote)
        prefix = options.exec_prefix()
        units: list[Unit] = [
            DumpStream(
                item=db,
                filename=f"{slug(db)}.pgdump",
                tool="pg_dump",
                argv=(
                    *prefix,
                    options.pg_dump,
                    *_connection(options),
                    "--format=custom",
                    "--compress=0",
                    f"--lock-wait-timeout={options.lock_timeout_ms()}",
                    "--no-password",
                    "--dbname",
                    db,
                ),
            )
            for db in databases
        ]
        if options.globals:
            units.append(
                DumpStream(
                    item=GLOBALS_ITEM,
                    filename="globals.sql",
                    tool="pg_dumpall",
                    argv=(
                        *prefix,
                        options.pg_dumpall,
                        *_connection(options),
                        "--globals-only",
                        "--no-password",
                    ),
                    min_bytes=GLOBALS_MIN_BYTES,
                )
            )
        return units

    def _list_databases(self, options: PostgresOptions, remote: RemoteShell) -> list[str]:
        sql = "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1"
        argv = (*options.exec_prefix(), options.psql, *_connection(options), "--no-psqlrc",
                "--no-align", "--tuples-only", "--no-password", "--dbname", "postgres",
                "--command", sql)  # fmt: skip
        result = remote.run(argv, timeout=LIST_TIMEOUT)
        if not result.ok:
            raise DumpError(
                f"listing databases with psql failed (exit {result.exit_status})",
                stderr_tail=result.stderr_tail(),
            )
        return list_lines(result)

    @contextmanager
    def hold(
        self, options: PostgresOptions, stream: DumpStream, remote: RemoteShell
    ) -> Iterator[Held]:
        """Export a snapshot from a held psql session, take the facts in it, and let
        pg_dump dump exactly that snapshot (--snapshot): the counts match the dump even
        while the database is being written."""
        if stream.item == GLOBALS_ITEM:
            yield Held()
            return
        session = remote.interactive(
            (*options.exec_prefix(), options.psql, *_connection(options), "--no-psqlrc",
             "--no-align", "--tuples-only", "--quiet", "--no-password", "--set",
             "ON_ERROR_STOP=1", "--dbname", stream.item)
        )  # fmt: skip
        try:
            try:
                snapshot = self._export_snapshot(session, options)
                facts = self._facts(session, options)
            except RemoteError as e:
                locked = "lock timeout" in e.stderr_tail
                why = (f"a table is locked by another session (waited lock_timeout="
                       f"{options.lock_timeout:.0f}s)" if locked else str(e))  # fmt: skip
                raise DumpError(f"{stream.item}: taking a snapshot and facts failed: {why}",
                                stderr_tail=e.stderr_tail, transient=locked) from None  # fmt: skip
            with session.pinging(options.session_timeout / 4, PING, b"backupd-ping"):
                yield Held(extra_argv=("--snapshot", snapshot), facts=facts)
            session.send("COMMIT;\n\\q\n")
        finally:
            session.close()

    @staticmethod
    def _export_snapshot(session: Interactive, options: PostgresOptions) -> str:
        session.send(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n"
            f"SET LOCAL lock_timeout = {options.lock_timeout_ms()};\n"
            "SET LOCAL idle_in_transaction_session_timeout = "
            f"{int(options.session_timeout * 1000)};\n"
            "SELECT pg_export_snapshot();\n\\echo backupd-end\n"
        )
        lines = session.read_until(b"backupd-end", options.facts_timeout).decode().split()
        if not lines:
            raise DumpError("psql did not export a snapshot")
        return lines[-1]

    @staticmethod
    def _facts(session: Interactive, options: PostgresOptions) -> dict[str, Any]:
        session.send(f"{TABLES_SQL}\n\\echo backupd-end\n")
        listing = session.read_until(b"backupd-end", options.facts_timeout).decode()
        sizes: dict[str, int] = {}
        for line in listing.splitlines():
            name, _, size = line.rpartition("|")
            if name:
                sizes[name] = int(size)
        facts: dict[str, Any] = {"table_bytes": dict(sorted(sizes.items()))}
        if options.count_rows and sizes:
            # Names come back quoted by format('%I.%I'): safe as identifiers; as a
            # string literal their single quotes are doubled.
            counts = "\n".join(
                f"SELECT '{name.replace(chr(39), chr(39) * 2)}', count(*) FROM {name};"  # noqa: S608
                for name in sizes
            )  # fmt: skip
            session.send(f"{counts}\n\\echo backupd-end\n")
            out = session.read_until(b"backupd-end", options.facts_timeout).decode()
            rows = {}
            for line in out.splitlines():
                name, _, count = line.rpartition("|")
                if name:
                    rows[name] = int(count)
            facts["rows"] = dict(sorted(rows.items()))
        return facts

    def vanished(self, options: PostgresOptions, unit: Unit, remote: RemoteShell) -> bool:
        """A database dropped since the plan (the globals cannot vanish)."""
        if unit.item == GLOBALS_ITEM:
            return False
        return unit.item not in self._list_databases(options, remote)


PING = "SELECT 1;\n\\echo backupd-ping\n"  # keeps the snapshot session from timing out
TABLES_SQL = (
    "SELECT format('%I.%I', n.nspname, c.relname), pg_total_relation_size(c.oid) "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1;"
)


def _connection(options: PostgresOptions) -> tuple[str, ...]:
    argv: tuple[str, ...] = ()
    if options.socket_dir:
        argv += ("--host", options.socket_dir)
    if options.port:
        argv += ("--port", str(options.port))
    if options.username:
        argv += ("--username", options.username)
    return argv


KIND = PostgreSQL()


# -- restoring (backupctl restore --into-db / --to-host --database, drills) ---------------
QUERY_TIMEOUT = 600.0
# format('%I.%I') as recorded in the facts: safe to use as an identifier in SQL
_IDENT = r'(?:[a-z_][a-z0-9_$]*|"(?:[^"]|"")+")'
FACT_TABLE = re.compile(rf"^({_IDENT})\.({_IDENT})$")


def split_fact_table(key: str) -> tuple[str, str]:
    """``"My Schema".t`` -> ("My Schema", "t"); ValueError if not a recorded table key."""
    m = FACT_TABLE.match(key)
    if not m:
        raise ValueError(f"not a schema-qualified table: {key!r}")
    return _unquote(m.group(1)), _unquote(m.group(2))


def _unquote(ident: str) -> str:
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident


class PostgresRestore:
    """Restore side of the kind: pg_restore reads the custom-format dump on stdin."""

    def restorable(self, item: str) -> bool:
        return item != GLOBALS_ITEM

    def resolve_table(self, table: str, recorded: Sequence[str]) -> str:
        known = {split_fact_table(k): k for k in recorded if FACT_TABLE.match(k)}
        schema, dot, name = table.partition(".")
        if dot and (schema, name) in known:
            return known[(schema, name)]
        if table in recorded:
            return table
        matches = [k for (_s, t), k in known.items() if t == table]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageError(f"table {table!r} is in several schemas ({', '.join(matches)}): "
                             "name it as SCHEMA.TABLE")  # fmt: skip
        shown = ", ".join(sorted(recorded)[:20]) or "none recorded"
        raise UsageError(f"no table {table!r} in this dump (tables: {shown})")

    def database_exists(self, options: PostgresOptions, shell: CommandShell, name: str) -> bool:
        out = self._psql(options, shell, "postgres", {"db": name},
                         "SELECT count(*) FROM pg_database WHERE datname = :'db';")  # fmt: skip
        return out.strip() != "0"

    def prepare_database(
        self, options: PostgresOptions, shell: CommandShell, req: DatabaseRestore
    ) -> None:
        if req.table is None:
            drop = 'DROP DATABASE IF EXISTS :"db" WITH (FORCE);\n' if req.replace else ""
            self._psql(options, shell, "postgres", {"db": req.database},
                       f'{drop}CREATE DATABASE :"db";')  # fmt: skip
            return
        if not self.database_exists(options, shell, req.database):
            self._psql(options, shell, "postgres", {"db": req.database},
                       'CREATE DATABASE :"db";')  # fmt: skip
        schema, _table = split_fact_table(req.table)
        self._psql(options, shell, req.database, {"schema": schema},
                   'CREATE SCHEMA IF NOT EXISTS :"schema";')  # fmt: skip

    def restore_argv(
        self, options: PostgresOptions, req: DatabaseRestore, secret_path: str | None
    ) -> tuple[str, ...]:
        argv = (*options.exec_prefix(), options.pg_restore, *_connection(options),
                "--no-password", "--exit-on-error", "--single-transaction",
                "--dbname", req.database)  # fmt: skip
        if not req.keep_owners:
            argv += ("--no-owner", "--no-privileges")
        if req.table is not None:
            schema, table = split_fact_table(req.table)
            argv += ("--schema", schema, "--table", table)
            if req.replace:
                argv += ("--clean", "--if-exists")
        return argv

    def restore_secret(self, options: PostgresOptions) -> bytes:
        return b""

    def stream_filter(self, table: str | None) -> StreamFilter | None:
        return None  # pg_restore selects the table itself

    def row_counts(
        self, options: PostgresOptions, shell: CommandShell, name: str, tables: Sequence[str]
    ) -> dict[str, int]:
        for key in tables:
            split_fact_table(key)  # only recorded, %I-quoted names reach the SQL
        sql = "".join(f"SELECT count(*) FROM {key};\n" for key in tables)  # noqa: S608
        out = self._psql(options, shell, name, {}, sql).split()
        return {key: int(n) for key, n in zip(tables, out, strict=True)}

    def tables(self, options: PostgresOptions, shell: CommandShell, name: str) -> set[str]:
        listing = self._psql(options, shell, name, {}, TABLES_SQL)
        return {line.rpartition("|")[0] for line in listing.splitlines() if "|" in line}

    def query(self, options: PostgresOptions, shell: CommandShell, name: str, sql: str) -> str:
        return self._psql(options, shell, name, {}, sql)

    @staticmethod
    def _psql(
        options: PostgresOptions,
        shell: CommandShell,
        db: str,
        variables: dict[str, str],
        sql: str,
    ) -> str:
        """Run SQL given on stdin; values reach it only as psql variables (:'v', :"v")."""
        argv: tuple[str, ...] = (
            *options.exec_prefix(), options.psql, *_connection(options), "--no-psqlrc",
            "--no-align", "--tuples-only", "--quiet", "--no-password", "--set",
            "ON_ERROR_STOP=1", "--dbname", db,
        )  # fmt: skip
        for k, v in variables.items():
            argv += ("--set", f"{k}={v}")
        result = shell.run(argv, timeout=QUERY_TIMEOUT, stdin=sql.encode())
        if not result.ok:
            raise RestoreError(f"psql on {shell.label} failed (exit {result.exit_status})",
                               stderr_tail=result.stderr_tail())  # fmt: skip
        return result.stdout.decode()


RESTORE = PostgresRestore()
