"""MariaDB's restore side: ``backupctl restore --into-db`` / ``--to-host --database`` and
drills (a scratch ``mariadbd``); the mariadb client reads the SQL dump on stdin."""

from __future__ import annotations

import re
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING

from backupd.catalogue import Check
from backupd.errors import RestoreError, UsageError, VerificationError
from jobs.base import DatabaseRestore, Lack, NoServerNeeds, Options, ScratchEnv, StreamFilter
from jobs.gating import RestoreGate
from jobs.mariadb_common import QUERY_TIMEOUT, MariaDBOptions, client_args, option_file
from jobs.mariadb_restore_gate import SANDBOX, restore_gate
from jobs.mariadb_rewrite import Account, PortableLoad
from jobs.mariadb_snapshot import TABLE_TYPES, hex_literal
from jobs.sqlfilter import OneTableFilter

if TYPE_CHECKING:
    from backupd.remote.shells import CommandShell


def sql_ident(value: str) -> str:
    if "\x00" in value or not value:
        raise UsageError(f"not a usable name: {value!r}")
    return "`" + value.replace("`", "``") + "`"


_CHARSET_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


def _recorded_properties(req: DatabaseRestore) -> tuple[str, str] | None:
    """(character set, collation) recorded at backup; None for an older archive. They
    reach SQL bare, so only names MariaDB could have given pass."""
    cs, co = req.facts.get("database_charset"), req.facts.get("database_collation")
    if not (isinstance(cs, str) and isinstance(co, str)):
        return None
    if not (_CHARSET_NAME.fullmatch(cs) and _CHARSET_NAME.fullmatch(co)):
        raise RestoreError(
            f"the recorded character set {cs!r} or collation {co!r} is not a name MariaDB gives"
        )
    return cs, co


# bytes of SQL per --execute: a gated droplet's gate takes requests up to 32 KiB, and a
# database of thousands of tables counts them in several statements' worth
QUERY_BYTES = 16384


def _batches(statements: Sequence[str], limit: int) -> list[list[str]]:
    """``statements`` in order, in runs of at most ``limit`` bytes (one longer: alone)."""
    runs: list[list[str]] = []
    size = limit
    for stmt in statements:
        if size + len(stmt) + 2 > limit:
            runs.append([])
            size = 0
        runs[-1].append(stmt)
        size += len(stmt.encode()) + 2
    return runs


def sandbox(options: MariaDBOptions) -> tuple[str, ...]:
    """The client options of a sandboxed restore: no client commands (``\\!``,
    ``source``), and no ``LOAD DATA LOCAL INFILE`` (which --sandbox lets through: SQL
    that reads any file the login can into a table, found by a new-user trial)."""
    return SANDBOX if options.sandbox else ()


def _unhex_lines(out: str) -> list[str]:
    return [bytes.fromhex(h).decode() for h in out.split()]


class MariaDBScratch:
    """The ScratchServer of MariaDB (jobs/base.py): ``mariadb-install-db``, then
    ``mariadbd`` without networking, the redo log not flushed per commit."""

    pid_file = "mysqld.pid"
    stop_signal = int(signal.SIGTERM)

    def start(self, env: ScratchEnv) -> Options:
        root, d = env.root, env.drills
        env.own(root / "tmp")
        data, sock = f"--datadir={root / 'data'}", root / "mysqld.sock"
        rootauth = "--auth-root-authentication-method=normal"
        env.run(
            (d.mariadb_install_db, "--no-defaults", data, rootauth, "--skip-test-db"),
            "mariadb-install-db",
        )
        files = (f"--pid-file={root / self.pid_file}", f"--log-error={root / 'server.log'}")
        server = (d.mariadbd, "--no-defaults", data, f"--socket={sock}", "--skip-networking")
        fast = ("--innodb-buffer-pool-size=128M", "--innodb-flush-log-at-trx-commit=0")
        probe = ("mariadb-admin", "--no-defaults", f"--socket={sock}", "-uroot", "ping")
        env.serve((*server, *files, f"--tmpdir={root / 'tmp'}", *fast), probe, "MariaDB")
        return MariaDBOptions.model_validate({"socket": str(sock), "username": "root"})


class MariaDBRestore(NoServerNeeds):
    """Restore side of the kind: the mariadb client reads the SQL dump on stdin."""

    scratch = MariaDBScratch()

    def restorable(self, item: str) -> bool:
        return True

    def restore_gate(self, options: MariaDBOptions, source: str) -> RestoreGate:
        """As ``restore_username``, the client sandboxed (jobs/mariadb_restore_gate.py)."""
        return restore_gate(options, source)

    def resolve_table(self, table: str, recorded: Sequence[str]) -> str:
        if table in recorded or not recorded:
            return table
        shown = ", ".join(sorted(recorded)[:20])
        raise UsageError(f"no table {table!r} in this dump (tables: {shown})")

    def database_exists(self, options: MariaDBOptions, shell: CommandShell, name: str) -> bool:
        where = f"SCHEMA_NAME = {hex_literal(name)}"
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
        spec = ""
        if (props := _recorded_properties(req)) is not None:  # as it was (decision 0017)
            spec = f" CHARACTER SET {props[0]} COLLATE {props[1]}"
        self._query(options, shell, f"{drop}CREATE DATABASE {db}{spec}")

    def lacks(
        self, options: MariaDBOptions, shell: CommandShell, req: DatabaseRestore
    ) -> list[Lack]:
        """The recorded collation, when this server does not have it (asked first)."""
        props = _recorded_properties(req)
        if props is None or req.table is not None:
            return []
        sql = (
            "SELECT COUNT(*) FROM information_schema.COLLATIONS "  # noqa: S608
            f"WHERE COLLATION_NAME = {hex_literal(props[1])}"
        )
        if self._query(options, shell, sql).strip() != "0":
            return []
        how = (
            "restore onto a server that has it (a MariaDB as new as the droplet's), or "
            "restore --to DIR and load the dump by hand"
        )
        return [Lack(f"collation {props[1]} (character set {props[0]})", False, how)]

    def extra_checks(
        self, options: MariaDBOptions, shell: CommandShell, req: DatabaseRestore
    ) -> list[Check]:
        """A whole database: its character set and collation, as recorded."""
        props = _recorded_properties(req)
        if props is None or req.table is not None:
            return []
        sql = (
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM "  # noqa: S608
            f"information_schema.SCHEMATA WHERE SCHEMA_NAME = {hex_literal(req.database)}"
        )
        now = tuple(self._query(options, shell, sql).split())
        if now != props:
            raise VerificationError(
                f"{req.database} on {shell.label} has character set and collation "
                f"{' '.join(now) or '(none)'}, recorded {' '.join(props)}"
            )
        detail = f"character set {props[0]}, collation {props[1]} as recorded"
        return [Check("database", detail)]

    def restore_argv(
        self, options: MariaDBOptions, req: DatabaseRestore, secret_path: str | None
    ) -> tuple[str, ...]:
        # the dump names no database (dumped without --databases): it lands in --database
        return (
            *options.exec_prefix(),
            options.client,
            *client_args(options, secret_path or "/dev/null"),
            *sandbox(options),
            "--binary-mode",
            "--database",
            req.database,
        )

    def restore_secret(self, options: MariaDBOptions) -> bytes:
        return option_file(options)

    def stream_filter(self, table: str | None) -> StreamFilter | None:
        return OneTableFilter(table) if table is not None else None

    def row_counts(
        self, options: MariaDBOptions, shell: CommandShell, name: str, tables: Sequence[str]
    ) -> dict[str, int]:
        db = sql_ident(name)
        counts = [f"SELECT COUNT(*) FROM {db}.{sql_ident(t)}" for t in tables]  # noqa: S608
        out: list[str] = []
        for batch in _batches(counts, QUERY_BYTES):
            out += self._query(options, shell, "; ".join(batch)).split()
        return {t: int(n) for t, n in zip(tables, out, strict=True)}

    def tables(self, options: MariaDBOptions, shell: CommandShell, name: str) -> set[str]:
        # tables with rows, like the dump's row facts (views have none of their own)
        where = f"TABLE_SCHEMA = {hex_literal(name)} AND TABLE_TYPE IN {TABLE_TYPES}"
        sql = f"SELECT HEX(TABLE_NAME) FROM information_schema.TABLES WHERE {where}"  # noqa: S608
        return set(_unhex_lines(self._query(options, shell, sql)))

    def load_rewrite(
        self,
        options: MariaDBOptions,
        shell: CommandShell,
        source: str,
        tables: Sequence[str],
        req: DatabaseRestore,
    ) -> PortableLoad:
        """Definers this server lacks become the restoring login; the database's own
        name becomes ``req.database`` (jobs/mariadb_rewrite.py)."""
        kept = self._definers_kept(options, shell)
        return PortableLoad(source, req.database, tables, lambda u, h: (u, h) in kept)

    def _definers_kept(self, options: MariaDBOptions, shell: CommandShell) -> frozenset[Account]:
        """The accounts that may stay definers here: the login itself, and every account
        of the server when the login may name others (SUPER or SET USER)."""
        me = _unhex_lines(self._query(options, shell, "SELECT HEX(CURRENT_USER())"))[0]
        user, _, host = me.rpartition("@")
        kept: set[Account] = {(user, host)}
        grantee = hex_literal(f"'{user}'@'{host}'")
        where = f"GRANTEE = {grantee} AND PRIVILEGE_TYPE IN ('SUPER', 'SET USER')"
        may_name = f"SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES WHERE {where}"  # noqa: S608
        try:
            if self._query(options, shell, may_name).strip() != "0":
                listing = self._query(
                    options, shell, "SELECT HEX(User), HEX(Host), 'x' FROM mysql.user"
                )
                for line in listing.splitlines():
                    u, h, _x = line.split("\t")
                    kept.add((bytes.fromhex(u).decode(), bytes.fromhex(h).decode() or None))
        except RestoreError:
            pass  # the login cannot tell: only itself stays a definer
        return frozenset(kept)

    def query(self, options: MariaDBOptions, shell: CommandShell, name: str, sql: str) -> str:
        return self._query(options, shell, f"USE {sql_ident(name)}; {sql}")

    @staticmethod
    def query_argv(options: MariaDBOptions, sql: str) -> tuple[str, ...]:
        """The client running ``sql`` (tab-separated rows, no header)."""
        return (
            *options.exec_prefix(),
            options.client,
            *client_args(options),
            *sandbox(options),
            "--batch",
            "--skip-column-names",
            "--execute",
            sql,
        )

    @classmethod
    def _query(cls, options: MariaDBOptions, shell: CommandShell, sql: str) -> str:
        argv = cls.query_argv(options, sql)
        result = shell.run(argv, timeout=QUERY_TIMEOUT, stdin=option_file(options) or None)
        if not result.ok:
            what = f"{options.client} on {shell.label} failed (exit {result.exit_status})"
            raise RestoreError(what, stderr_tail=result.stderr_tail())
        return result.stdout.decode()
