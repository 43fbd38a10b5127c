"""MariaDB/MySQL: one ``mariadb-dump --single-transaction`` stream per database, with
each table's rows counted by the server inside the dump's own snapshot
(jobs/mariadb_snapshot.py, docs/decisions/0017).

Credentials never appear on a command line: either an option file already on the
droplet (``defaults_file``), or a password read here from a credential file and sent on
stdin, which the droplet side keeps in a private option file while the tools run.
Names are data: databases are listed hex-encoded and reach SQL as hex literals.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from contextlib import AbstractContextManager

from backupd.errors import DumpError, UsageError
from jobs.base import DATABASE_CHUNKER, DumpStream, Held, RemoteShell, Unit, nothing_held, slug
from jobs.gating import GateRequest, say
from jobs.mariadb_common import MariaDBOptions, client_args, option_file, sql_string
from jobs.mariadb_restore import MariaDBRestore, sql_ident
from jobs.mariadb_snapshot import SCRIPT, SNAPSHOT_SQL, before_dump_sql, block_sql, counts_sql

LIST_TIMEOUT = 60.0
SYSTEM_SCHEMAS = frozenset({"information_schema", "performance_schema", "sys", "mysql"})


class MariaDB:
    name = "mariadb"
    options_model = MariaDBOptions

    def plan(self, options: MariaDBOptions, remote: RemoteShell) -> Sequence[Unit]:
        stdin = option_file(options)
        databases = options.databases or self._list(options, remote, stdin)
        return [
            DumpStream(
                item=db,
                filename=f"{slug(db)}.sql",
                tool=options.dump,
                chunker_params=DATABASE_CHUNKER,
                programs=(options.client, options.dump),
                argv=(*options.exec_prefix(), *_dump_script(options, db)),
                stdin=stdin,
            )
            for db in databases
        ]

    def gate_requests(self, options: MariaDBOptions, source: str) -> list[GateRequest]:
        """What this source asks of a gated droplet (decision 0022): the list of databases
        and the dump of each listed one, every argument fixed by the config. UsageError
        when the source cannot go through the gate: a password sent over stdin (the gate
        gives a program no input: an option file from the backup host could set any
        option, init-command included), or no list of databases (each dump's SQL is
        built from its name here, so the gate holds one request per database)."""
        if options.password_file is not None:
            raise UsageError(
                "a gated MariaDB source cannot send a password (password_file): use "
                "defaults_file, an option file on the droplet (docs/droplet-setup.md)"
            )
        if not options.databases:
            raise UsageError("a gated MariaDB source must list its databases")
        return [
            GateRequest(f"{source}: list databases", _list_argv(options)),
            *(
                GateRequest(
                    f"{source}: dump {db}", (*options.exec_prefix(), *_dump_script(options, db))
                )
                for db in options.databases
            ),
        ]

    def droplet_setup(self, options: MariaDBOptions, source: str, login: str) -> list[str]:
        """A user with the read grants mariadb-dump --single-transaction --routines
        --events --triggers needs on each listed database, RELOAD (the commit block of the
        row counts), mysql.proc (routines: without it they are left out, silently) and
        the names of mysql.user (the definer check); authenticated by the droplet's login
        (unix_socket), created by the server's root."""
        user = options.username or login
        account = f"{sql_string(user)}@'localhost'"
        grants = [
            *(
                f"GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON {sql_ident(db)}.* TO {account};"
                for db in options.databases
            ),
            f"GRANT RELOAD ON *.* TO {account};",
            f"GRANT SELECT ON mysql.proc TO {account};",
            f"GRANT SELECT (User, Host) ON mysql.user TO {account};",
        ]
        where = (f"--socket={options.socket}",) if options.socket else ()
        admin = (*options.exec_prefix(), options.client, *where, "--user=root")
        create = [f"CREATE USER IF NOT EXISTS {account} IDENTIFIED VIA unix_socket;"]
        fail = f"{source}: creating the user {user} or its grants failed (see above)"
        if user != login:  # a password, which only the operator chooses (defaults_file)
            create = []
            fail = f"{source}: granting to {user} failed (create it, password in defaults_file)"
        return [
            f"{shlex.join(admin)} --batch <<'BACKUPD_SQL' || die {shlex.quote(fail)}",
            *create,
            *grants,
            "BACKUPD_SQL",
            say(f"{source}: user {user} reads {len(options.databases)} database(s)"),
        ]

    def _list(self, options: MariaDBOptions, remote: RemoteShell, stdin: bytes) -> list[str]:
        result = remote.run(_list_argv(options), timeout=LIST_TIMEOUT, stdin=stdin or None)
        if not result.ok:
            raise DumpError(
                f"listing databases with {options.client} failed (exit {result.exit_status})",
                stderr_tail=result.stderr_tail(),
            )
        names = (bytes.fromhex(h).decode() for h in result.stdout.decode().split())
        return sorted(db for db in names if db not in SYSTEM_SCHEMAS)

    def hold(
        self, options: MariaDBOptions, stream: DumpStream, remote: RemoteShell
    ) -> AbstractContextManager[Held]:
        return nothing_held()

    def vanished(self, options: MariaDBOptions, unit: Unit, remote: RemoteShell) -> bool:
        """A database dropped since the plan."""
        return unit.item not in self._list(options, remote, option_file(options))


def _list_argv(options: MariaDBOptions) -> tuple[str, ...]:
    # hex: --batch would hand back a tab, a newline or a backslash escaped
    sql = "SELECT HEX(SCHEMA_NAME) FROM information_schema.SCHEMATA ORDER BY 1"
    return (
        *options.exec_prefix(),
        options.client,
        *client_args(options),
        "--batch",
        "--skip-column-names",
        "--execute",
        sql,
    )


def _dump_script(options: MariaDBOptions, db: str) -> tuple[str, ...]:
    """``sh -c SCRIPT`` with its parameters: the dump of ``db`` with counts and checks."""
    wait = int(options.commit_block_timeout)
    secret = options.password_file is not None  # the script keeps it in a private file
    return (
        "sh",
        "-c",
        SCRIPT,
        "backupd-mariadb",
        options.client,
        options.dump,
        db,
        str(wait),
        "count" if options.count_rows else "skip",
        "1" if secret else "0",
        before_dump_sql(db),
        block_sql(wait),
        SNAPSHOT_SQL,
        counts_sql(db),
        *client_args(options, None),
    )


KIND = MariaDB()


RESTORE = MariaDBRestore()  # the restore side: jobs/mariadb_restore.py
