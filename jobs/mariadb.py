"""MariaDB/MySQL: one ``mariadb-dump --single-transaction`` stream per database.

Credentials never appear on a command line: either an option file already on the
droplet (``defaults_file``), or a password read here from a credential file and sent as
an option file on the dump's stdin (``--defaults-extra-file=/dev/stdin``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from backupd.credentials import read_secret_file
from backupd.dumpfilter import OneTableFilter
from backupd.errors import DumpError, RestoreError, UsageError
from jobs.base import (
    DatabaseRestore,
    DumpStream,
    ExecOptions,
    Held,
    NoServerNeeds,
    RemoteShell,
    StreamFilter,
    Unit,
    list_lines,
    nothing_held,
    slug,
)

if TYPE_CHECKING:
    from backupd.shells import CommandShell

LIST_TIMEOUT = 60.0
QUERY_TIMEOUT = 600.0
SYSTEM_SCHEMAS = frozenset({"information_schema", "performance_schema", "sys", "mysql"})


class MariaDBOptions(ExecOptions):
    databases: tuple[str, ...] = ()  # empty: every database except the system schemas
    socket: str | None = None
    username: str | None = None
    defaults_file: str | None = None  # option file on the droplet ([client] user/password)
    password_file: Path | None = None  # on the backup host, mode 0600: sent over stdin
    dump: str = "mariadb-dump"  # or mysqldump
    client: str = "mariadb"  # or mysql


class MariaDB:
    name = "mariadb"
    options_model = MariaDBOptions

    def plan(self, options: MariaDBOptions, remote: RemoteShell) -> Sequence[Unit]:
        stdin = _option_file(options)
        databases = options.databases or self._list(options, remote, stdin)
        return [
            DumpStream(
                item=db,
                filename=f"{slug(db)}.sql",
                tool=options.dump,
                argv=(
                    *options.exec_prefix(),
                    options.dump,
                    *_client_args(options),
                    "--single-transaction",
                    "--routines",
                    "--events",
                    "--triggers",
                    "--hex-blob",
                    "--default-character-set=utf8mb4",
                    "--",
                    db,
                ),
                stdin=stdin,
                counter="sql-inserts",
            )
            for db in databases
        ]

    def _list(self, options: MariaDBOptions, remote: RemoteShell, stdin: bytes) -> list[str]:
        argv = (*options.exec_prefix(), options.client, *_client_args(options), "--batch",
                "--skip-column-names", "--execute", "SHOW DATABASES")  # fmt: skip
        result = remote.run(argv, timeout=LIST_TIMEOUT, stdin=stdin or None)
        if not result.ok:
            raise DumpError(
                f"listing databases with {options.client} failed (exit {result.exit_status})",
                stderr_tail=result.stderr_tail(),
            )
        return [db for db in list_lines(result) if db not in SYSTEM_SCHEMAS]

    def hold(
        self, options: MariaDBOptions, stream: DumpStream, remote: RemoteShell
    ) -> AbstractContextManager[Held]:
        return nothing_held()

    def vanished(self, options: MariaDBOptions, unit: Unit, remote: RemoteShell) -> bool:
        """A database dropped since the plan."""
        return unit.item not in self._list(options, remote, _option_file(options))


def _client_args(options: MariaDBOptions, option_file: str = "/dev/stdin") -> tuple[str, ...]:
    # An option-file flag must come first on the command line.
    argv: tuple[str, ...] = ()
    if options.password_file is not None:
        argv += (f"--defaults-extra-file={option_file}",)
    elif options.defaults_file:
        argv += (f"--defaults-extra-file={options.defaults_file}",)
    if options.socket:
        argv += (f"--socket={options.socket}",)
    if options.username:
        argv += (f"--user={options.username}",)
    return argv


def _option_file(options: MariaDBOptions) -> bytes:
    if options.password_file is None:
        return b""
    password = read_secret_file(options.password_file)
    escaped = password.replace("\\", "\\\\").replace('"', '\\"')
    return f'[client]\npassword="{escaped}"\n'.encode()


KIND = MariaDB()


# -- restoring (backupctl restore --into-db / --to-host --database, drills) ---------------
def sql_string(value: str) -> str:
    """A string literal under MariaDB's default sql_mode (backslash escapes on)."""
    if "\x00" in value:
        raise UsageError("a name cannot contain a NUL character")
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def sql_ident(value: str) -> str:
    if "\x00" in value or not value:
        raise UsageError(f"not a usable name: {value!r}")
    return "`" + value.replace("`", "``") + "`"


class MariaDBRestore(NoServerNeeds):
    """Restore side of the kind: the mariadb client reads the SQL dump on stdin."""

    def restorable(self, item: str) -> bool:
        return True

    def resolve_table(self, table: str, recorded: Sequence[str]) -> str:
        if table in recorded or not recorded:
            return table
        shown = ", ".join(sorted(recorded)[:20])
        raise UsageError(f"no table {table!r} in this dump (tables: {shown})")

    def database_exists(self, options: MariaDBOptions, shell: CommandShell, name: str) -> bool:
        where = f"SCHEMA_NAME = {sql_string(name)}"
        sql = f"SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE {where}"  # noqa: S608
        return self._query(options, shell, sql).strip() != "0"

    def prepare_database(
        self, options: MariaDBOptions, shell: CommandShell, req: DatabaseRestore
    ) -> None:
        db = sql_ident(req.database)
        if req.table is not None:
            self._query(options, shell, f"CREATE DATABASE IF NOT EXISTS {db}")
            return
        drop = f"DROP DATABASE IF EXISTS {db}; " if req.replace else ""
        self._query(options, shell, f"{drop}CREATE DATABASE {db}")

    def restore_argv(
        self, options: MariaDBOptions, req: DatabaseRestore, secret_path: str | None
    ) -> tuple[str, ...]:
        # the dump names no database (dumped without --databases): it lands in --database
        return (*options.exec_prefix(), options.client,
                *_client_args(options, secret_path or "/dev/null"), "--binary-mode",
                f"--database={req.database}")  # fmt: skip

    def restore_secret(self, options: MariaDBOptions) -> bytes:
        return _option_file(options)

    def stream_filter(self, table: str | None) -> StreamFilter | None:
        return OneTableFilter(table) if table is not None else None

    def row_counts(
        self, options: MariaDBOptions, shell: CommandShell, name: str, tables: Sequence[str]
    ) -> dict[str, int]:
        db = sql_ident(name)
        sql = "; ".join(f"SELECT COUNT(*) FROM {db}.{sql_ident(t)}" for t in tables)  # noqa: S608
        out = self._query(options, shell, sql).split() if tables else []
        return {t: int(n) for t, n in zip(tables, out, strict=True)}

    def tables(self, options: MariaDBOptions, shell: CommandShell, name: str) -> set[str]:
        # base tables only, like the dump's row facts (views have no rows of their own)
        where = f"TABLE_SCHEMA = {sql_string(name)} AND TABLE_TYPE = 'BASE TABLE'"
        sql = f"SELECT TABLE_NAME FROM information_schema.TABLES WHERE {where}"  # noqa: S608
        return set(self._query(options, shell, sql).splitlines())

    def query(self, options: MariaDBOptions, shell: CommandShell, name: str, sql: str) -> str:
        return self._query(options, shell, f"USE {sql_ident(name)}; {sql}")

    @staticmethod
    def _query(options: MariaDBOptions, shell: CommandShell, sql: str) -> str:
        argv = (*options.exec_prefix(), options.client, *_client_args(options), "--batch",
                "--skip-column-names", "--execute", sql)  # fmt: skip
        result = shell.run(argv, timeout=QUERY_TIMEOUT, stdin=_option_file(options) or None)
        if not result.ok:
            what = f"{options.client} on {shell.label} failed (exit {result.exit_status})"
            raise RestoreError(what, stderr_tail=result.stderr_tail())
        return result.stdout.decode()


RESTORE = MariaDBRestore()
