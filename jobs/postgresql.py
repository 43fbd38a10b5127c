"""PostgreSQL: one ``pg_dump`` custom-format stream per database.

Custom format (``-Fc``) is what ``pg_restore`` restores selectively (one table, one
schema). Compression is left to Borg (``-Z0``) so unchanged rows deduplicate.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from backupd.errors import DumpError
from jobs.base import DumpStream, Options, RemoteShell, slug

LIST_TIMEOUT = 60.0


class PostgresOptions(Options):
    databases: tuple[str, ...] = ()  # empty: every database that accepts connections
    socket_dir: str | None = None  # pg's -h; the droplet's default socket when unset
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str | None = None  # database role (-U)
    sudo_user: str | None = None  # run the tools as this OS user (sudo -n -u USER)
    pg_dump: str = "pg_dump"
    psql: str = "psql"


class PostgreSQL:
    name = "postgresql"
    options_model = PostgresOptions

    def streams(self, options: PostgresOptions, remote: RemoteShell) -> Sequence[DumpStream]:
        databases = options.databases or self._list_databases(options, remote)
        return [
            DumpStream(
                item=db,
                filename=f"{slug(db)}.pgdump",
                argv=(
                    *_prefix(options),
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

    def _list_databases(self, options: PostgresOptions, remote: RemoteShell) -> list[str]:
        sql = "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1"
        argv = (
            *_prefix(options),
            options.psql,
            *_connection(options),
            "--no-psqlrc",
            "--no-align",
            "--tuples-only",
            "--no-password",
            "--dbname",
            "postgres",
            "--command",
            sql,
        )
        result = remote.run(argv, timeout=LIST_TIMEOUT)
        if not result.ok:
            raise DumpError(
                f"listing databases with psql failed (exit {result.exit_status})",
                stderr_tail=result.stderr_tail(),
            )
        return [line for line in result.stdout.decode().splitlines() if line]


def _prefix(options: PostgresOptions) -> tuple[str, ...]:
    return ("sudo", "-n", "-u", options.sudo_user, "--") if options.sudo_user else ()


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
