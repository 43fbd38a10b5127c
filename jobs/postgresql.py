"""PostgreSQL: one ``pg_dump`` custom-format stream per database, plus the cluster globals.

Custom format (``-Fc``) is what ``pg_restore`` restores selectively (one table, one
schema). Compression is left to Borg (``-Z0``) so unchanged rows deduplicate
(docs/benchmarks.md). Roles and tablespaces live outside every database: they come
from ``pg_dumpall --globals-only`` as a plain SQL stream.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from backupd.errors import DumpError
from jobs.base import DumpStream, ExecOptions, RemoteShell, Unit, list_lines, slug

LIST_TIMEOUT = 60.0
GLOBALS_ITEM = "_globals"


class PostgresOptions(ExecOptions):
    databases: tuple[str, ...] = ()  # empty: every database that accepts connections
    globals: bool = True  # also pull roles and tablespaces (pg_dumpall --globals-only)
    socket_dir: str | None = None  # pg's --host; the droplet's default socket when unset
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str | None = None  # database role (--username)
    pg_dump: str = "pg_dump"
    pg_dumpall: str = "pg_dumpall"
    psql: str = "psql"


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
