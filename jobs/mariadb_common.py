"""What the MariaDB kind's backup and restore sides share: the source's options and the
client's connection arguments (credentials never on a command line)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from backupd.config.credentials import read_secret_file
from backupd.config.units import Duration
from jobs.base import ExecOptions

QUERY_TIMEOUT = 600.0


class MariaDBOptions(ExecOptions):
    databases: tuple[str, ...] = ()  # empty: every database except the system schemas
    socket: str | None = None
    username: str | None = None
    defaults_file: str | None = None  # option file on the droplet ([client] user/password)
    password_file: Path | None = None  # on the backup host, mode 0600: sent over stdin
    dump: str = "mariadb-dump"  # or mysqldump
    client: str = "mariadb"  # or mysql
    # a restore onto a gated droplet: the user it connects as (host setup creates it, with
    # its password in restore_defaults_file there; default /etc/backupd/SOURCE-restore.cnf)
    restore_username: str = Field(default="backupd_restore", min_length=1)
    restore_defaults_file: str | None = None
    # the client refuses client commands (\!, source) in what it reads: set for restores
    # onto a gated droplet (MariaDB 10.5.25, 10.6.18, 10.11.8 or later there)
    sandbox: bool = False
    count_rows: bool = True  # exact row counts in the dump's own snapshot (needs RELOAD)
    # the longest commits are blocked while the dump and the count session take their
    # snapshots (BACKUP STAGE BLOCK_COMMIT); the server lifts it after this even if
    # backupd is gone. A dump slower to start: no counts, a warning.
    commit_block_timeout: Duration = Field(default=10.0, ge=1.0, le=600.0)


def client_args(options: MariaDBOptions, option_file: str | None = "/dev/stdin") -> tuple[str, ...]:
    """Connection options; ``option_file`` holds the password (None: added later)."""
    # An option-file flag must come first on the command line.
    argv: tuple[str, ...] = ()
    if options.password_file is not None:
        if option_file is not None:
            argv += (f"--defaults-extra-file={option_file}",)
    elif options.defaults_file:
        argv += (f"--defaults-extra-file={options.defaults_file}",)
    if options.socket:
        argv += (f"--socket={options.socket}",)
    if options.username:
        argv += (f"--user={options.username}",)
    # names in SQL text and --database travel in the connection's character set: the
    # client's default follows the locale (latin1 in a bare shell), which mangles them
    return (*argv, "--default-character-set=utf8mb4")


def sql_string(value: str) -> str:
    """A MariaDB string literal (default sql_mode: a backslash escapes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def option_file(options: MariaDBOptions) -> bytes:
    if options.password_file is None:
        return b""
    password = read_secret_file(options.password_file)
    escaped = password.replace("\\", "\\\\").replace('"', '\\"')
    return f'[client]\npassword="{escaped}"\n'.encode()
