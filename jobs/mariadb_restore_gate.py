"""How a MariaDB database restores onto a gated droplet (decision 0022): the restore key's
requests, and the restore user `backupctl host setup` makes for it.

The mariadb client reads a dump's SQL, and its input can hold client commands (``\\!``
runs a shell, ``\\.`` reads a file): on a gated droplet it always runs ``--sandbox``
(MariaDB 10.5.25, 10.6.18, 10.11.8 and later), which refuses them, in ``--execute`` and on
stdin alike, and ``--local-infile=0``: ``LOAD DATA LOCAL INFILE`` is SQL the sandbox lets
through, and reads any file the login can (a new-user trial read /etc/passwd and this
user's own password file with it). What the SQL does is the restore user's to allow:
every privilege on the source's databases and on names that start with theirs followed by
``_`` (``shop_restored``), nothing global. Its password never leaves the droplet: host
setup draws it there and keeps it in an option file only the login reads
(``restore_defaults_file``); the daemon's key cannot read it (its gate runs no ``cat``),
the restore key's allowlist names it literally.
"""

from __future__ import annotations

import shlex

from backupd.errors import UsageError
from jobs.gating import GateRequest, Param, RestoreGate, say
from jobs.mariadb_common import MariaDBOptions, client_args, sql_string

# the client refuses client commands and reading local files (mariadb_restore.sandbox)
SANDBOX = ("--sandbox", "--local-infile=0")


def _grant_pattern(name: str) -> str:
    """A database name as a GRANT names it exactly (``_`` and ``%`` are wildcards there)."""
    return name.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%").replace("`", "``")


def option_file_path(options: MariaDBOptions, source: str) -> str:
    return options.restore_defaults_file or f"/etc/backupd/{source}-restore.cnf"


def gated_options(options: MariaDBOptions, source: str) -> MariaDBOptions:
    """As ``restore_username``, its password in the droplet's option file, sandboxed."""
    if options.container:
        raise UsageError(
            f"{source}: restores onto a gated droplet of a MariaDB in a container are not "
            "built: restore --to DIR and load the dump there as its admin"
        )
    update = {
        "username": options.restore_username,
        "defaults_file": option_file_path(options, source),
        "password_file": None,
        "sudo_user": None,
        "sandbox": True,
    }
    return options.model_copy(update=update)


def restore_gate(options: MariaDBOptions, source: str) -> RestoreGate:
    gated = gated_options(options, source)
    head = (*gated.exec_prefix(), gated.client, *client_args(gated), *SANDBOX)
    sql, database = Param("sql", "any"), Param("database", "any", flag="--database")
    query: tuple[str | Param, ...] = (*head, "--batch", "--skip-column-names", "--execute", sql)
    load: tuple[str | Param, ...] = (*head, "--binary-mode", database)
    requests = (
        GateRequest(f"{source}: restore: query", query),
        GateRequest(f"{source}: restore: load the dump", load, stdin_passes=True),
    )
    return RestoreGate(gated, requests, tuple(_setup(options, gated, source)))


def _setup(options: MariaDBOptions, gated: MariaDBOptions, source: str) -> list[str]:
    """The restore user with a password drawn on the droplet (kept if there is one),
    written to its option file (0600, the login's), and its grants."""
    user = options.restore_username
    account = f"{sql_string(user)}@'localhost'"
    cnf = shlex.quote(str(gated.defaults_file))
    where = (f"--socket={options.socket}",) if options.socket else ()
    admin = shlex.join((options.client, *where, "--user=root", "--batch"))
    grants = [
        f"GRANT ALL PRIVILEGES ON `{pattern}`.* TO {account};"
        for db in options.databases
        for pattern in (_grant_pattern(db), _grant_pattern(db) + "\\_%")
    ]
    fail = shlex.quote(f"{source}: creating the restore user {user} failed (see above)")
    with_pw = [  # the password is hex digits: nothing to quote
        f"printf '%s%s%s\\n' {shlex.quote(f'{verb} {account} IDENTIFIED BY ' + chr(39))} "
        f'"$pw" "\';"'
        for verb in ("CREATE USER IF NOT EXISTS", "ALTER USER")
    ]
    return [
        f'mkdir -p "$(dirname {cnf})"',  # 0755: the login reaches its file
        f"if [ ! -s {cnf} ]; then",
        "  (umask 077; pw=$(head -c 24 /dev/urandom | od -An -tx1 "
        f"| tr -d ' \\n'); printf '[client]\\npassword=%s\\n' \"$pw\" > {cnf}) || die {fail}",
        "fi",
        f'chown "$login" {cnf} && chmod 0600 {cnf} || die {fail}',
        f"pw=$(sed -n 's/^password=//p' {cnf})",
        "{",
        *(f"  {line}" for line in with_pw),
        "  cat <<'BACKUPD_SQL'",
        *grants,
        "BACKUPD_SQL",
        f"}} | {admin} || die {fail}",
        say(
            f"{source}: user {user} restores into {len(options.databases)} database(s) "
            "and names that start with theirs and _"
        ),
    ]
