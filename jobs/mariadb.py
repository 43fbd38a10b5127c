"""MariaDB/MySQL: one ``mariadb-dump --single-transaction`` stream per database.

Credentials never appear on a command line: either an option file already on the
droplet (``defaults_file``), or a password read here from a credential file and sent as
an option file on the dump's stdin (``--defaults-extra-file=/dev/stdin``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from backupd.credentials import read_secret_file
from backupd.errors import DumpError
from jobs.base import (
    DumpStream,
    ExecOptions,
    Held,
    RemoteShell,
    Unit,
    list_lines,
    nothing_held,
    slug,
)

LIST_TIMEOUT = 60.0
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


def _client_args(options: MariaDBOptions) -> tuple[str, ...]:
    # An option-file flag must come first on the command line.
    argv: tuple[str, ...] = ()
    if options.password_file is not None:
        argv += ("--defaults-extra-file=/dev/stdin",)
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
