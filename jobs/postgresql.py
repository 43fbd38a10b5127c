"""PostgreSQL: one ``pg_dump`` custom-format stream per database, plus the cluster globals.

Custom format (``-Fc``) is what ``pg_restore`` restores selectively (one table, one
schema). Compression is left to Borg (``-Z0``) so unchanged rows deduplicate
(docs/benchmarks.md). Roles and tablespaces live outside every database: they come
from ``pg_dumpall --globals-only`` as a plain SQL stream.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from backupd.errors import DumpError, RemoteError
from jobs.base import DATABASE_CHUNKER, DumpStream, Held, RemoteShell, Unit, slug
from jobs.gating import GateRequest, Param, Session, say
from jobs.pg_common import (
    GLOBALS_ITEM,
    TABLES_SQL,
    WORLD_SQL,
    PostgresOptions,
    admin_psql,
    connection,
    count_sql,
    dbname_arg,
    psql_argv,
    psql_head,
    table_sizes,
    world_facts,
)
from jobs.pg_restore import PostgresRestore

if TYPE_CHECKING:
    from backupd.remote.channel import Interactive

A = TypeVar("A", str, Param)
LIST_TIMEOUT = 60.0
GLOBALS_MIN_BYTES = 64  # pg_dumpall's header alone is longer: less is a broken dump


class PostgreSQL:
    name = "postgresql"
    options_model = PostgresOptions

    def plan(self, options: PostgresOptions, remote: RemoteShell) -> Sequence[Unit]:
        databases = options.databases or self._list_databases(options, remote)
        units: list[Unit] = [
            DumpStream(
                item=db,
                filename=f"{slug(db)}.pgdump",
                tool="pg_dump",
                chunker_params=DATABASE_CHUNKER,
                programs=(options.pg_dump, options.psql),
                argv=_dump_argv(options, dbname_arg(db)),
            )
            for db in databases
        ]
        if options.globals:
            units.append(
                DumpStream(
                    item=GLOBALS_ITEM,
                    filename="globals.sql",
                    tool="pg_dumpall",
                    chunker_params=DATABASE_CHUNKER,
                    programs=(options.pg_dumpall,),
                    argv=_globals_argv(options),
                    min_bytes=GLOBALS_MIN_BYTES,
                )
            )
        return units

    def gate_requests(self, options: PostgresOptions, source: str) -> list[GateRequest]:
        """What this source asks of a gated droplet (decision 0022): the list of databases,
        the snapshot-and-facts session of a listed one (every one, when none are listed:
        the session's statements are fixed here, the row counts checked by shape), a dump
        of it in that snapshot, and the globals."""
        database = Param("database", "pg_dbname", values=options.databases or None)
        snapshot = Param("snapshot", "pg_snapshot", flag="--snapshot", optional=True)
        statements = (TABLES_SQL + "\n", WORLD_SQL + "\n", END, PING, COMMIT)
        session = Session(statements, pg_counts=options.count_rows, first=_begin(options))
        requests = [
            GateRequest(f"{source}: list databases", _list_argv(options)),
            GateRequest(f"{source}: snapshot and facts", (*psql_head(options), database), session),
            GateRequest(f"{source}: dump a database", (*_dump_argv(options, database), snapshot)),
        ]
        if options.globals:
            requests.append(GateRequest(f"{source}: dump the globals", _globals_argv(options)))
        return requests

    def droplet_setup(self, options: PostgresOptions, source: str, login: str) -> list[str]:
        """A login role that reads all data and nothing else: ``pg_read_all_data`` and
        ``BYPASSRLS`` (pg_dump fails on a table with a policy otherwise), created (or
        set so) by the server's superuser. Peer authentication maps the login to the
        role of the same name."""
        role = options.username or login
        ident = '"' + role.replace('"', '""') + '"'
        failed = shlex.quote(f"{source}: creating the role {role} failed (see above)")
        lines = [
            f"{shlex.join(admin_psql(options))} --dbname=postgres <<'BACKUPD_SQL' || die {failed}",
            f"DO $$BEGIN CREATE ROLE {ident} LOGIN BYPASSRLS; EXCEPTION WHEN duplicate_object "
            f"THEN ALTER ROLE {ident} LOGIN BYPASSRLS; END$$;",
            f"GRANT pg_read_all_data TO {ident};",
            "BACKUPD_SQL",
            say(f"{source}: role {role} reads all data (pg_read_all_data)"),
        ]
        if role != login and not options.container:
            map_it = f"username = {login!r} or a pg_ident.conf map to {role!r}"
            lines.append(say(f"{source}: peer authentication needs {map_it}"))
        if options.sudo_user:
            lines.append(
                say(f"{source}: drop sudo_user = {options.sudo_user!r}: the role is enough")
            )
        return lines

    def _list_databases(self, options: PostgresOptions, remote: RemoteShell) -> list[str]:
        """Every database that accepts connections. NUL-separated: a name may hold a
        newline (or anything else but NUL)."""
        result = remote.run(_list_argv(options), timeout=LIST_TIMEOUT)
        if not result.ok:
            raise DumpError(
                f"listing databases with psql failed (exit {result.exit_status})",
                stderr_tail=result.stderr_tail(),
            )
        return [name for name in result.stdout.decode().split("\0") if name]

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
        session = remote.interactive(psql_argv(options, stream.item))
        try:
            try:
                snapshot = self._export_snapshot(session, options)
                facts = self._facts(session, options)
            except RemoteError as e:
                locked = "lock timeout" in e.stderr_tail
                why = (
                    f"a table is locked by another session (waited lock_timeout="
                    f"{options.lock_timeout:.0f}s)"
                    if locked
                    else str(e)
                )
                raise DumpError(
                    f"{stream.item}: taking a snapshot and facts failed: {why}",
                    stderr_tail=e.stderr_tail,
                    transient=locked,
                ) from None
            with session.pinging(options.session_timeout / 4, PING, b"backupd-ping"):
                yield Held(extra_argv=("--snapshot", snapshot), facts=facts)
            session.send(COMMIT)
        finally:
            session.close()

    @staticmethod
    def _export_snapshot(session: Interactive, options: PostgresOptions) -> str:
        session.send(_begin(options) + END)
        lines = session.read_until(b"backupd-end", options.facts_timeout).decode().split()
        if not lines:
            raise DumpError("psql did not export a snapshot")
        return lines[-1]

    @staticmethod
    def _facts(session: Interactive, options: PostgresOptions) -> dict[str, Any]:
        """Table sizes, exact row counts, and what the database is and needs beyond its
        tables (pg_common.WORLD_SQL), all in the dump's snapshot."""

        def ask(sql: str) -> str:
            session.send(sql.rstrip("\n") + "\n" + END)  # exactly as the gate holds it
            out = session.read_until(b"backupd-end", options.facts_timeout)
            return out.decode(errors="replace").strip()  # SQL_ASCII names: any bytes

        sizes = table_sizes(ask(TABLES_SQL))
        facts: dict[str, Any] = {"table_bytes": sizes, **world_facts(ask(WORLD_SQL))}
        if options.count_rows and sizes:
            counts = ask(count_sql(list(sizes))).split()
            facts["rows"] = {k: int(n) for k, n in zip(sizes, counts, strict=True)}
        return facts

    def vanished(self, options: PostgresOptions, unit: Unit, remote: RemoteShell) -> bool:
        """A database dropped since the plan (the globals cannot vanish)."""
        if unit.item == GLOBALS_ITEM:
            return False
        return unit.item not in self._list_databases(options, remote)


LIST_SQL = "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1"


def _list_argv(options: PostgresOptions) -> tuple[str, ...]:
    return psql_argv(options, "postgres", "--record-separator-zero", "--command", LIST_SQL)


def _dump_argv(options: PostgresOptions, database: A) -> tuple[str | A, ...]:
    """pg_dump of one database (``dbname_arg(name)``, or the gate's parameter for it),
    custom format, uncompressed (Borg compresses after deduplicating)."""
    return (
        *options.exec_prefix(),
        options.pg_dump,
        *connection(options),
        "--format=custom",
        "--compress=0",
        f"--lock-wait-timeout={options.lock_timeout_ms()}",
        "--no-password",
        database,
    )


def _globals_argv(options: PostgresOptions) -> tuple[str, ...]:
    return (
        *options.exec_prefix(),
        options.pg_dumpall,
        *connection(options),
        "--globals-only",
        *(() if options.role_passwords else ("--no-role-passwords",)),
        "--no-password",
    )


def _begin(options: PostgresOptions) -> str:
    """The snapshot session's first statements: a read-only transaction whose snapshot
    pg_dump is given, with the configured timeouts."""
    return (
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n"
        f"SET LOCAL lock_timeout = {options.lock_timeout_ms()};\n"
        "SET LOCAL idle_in_transaction_session_timeout = "
        f"{int(options.session_timeout * 1000)};\n"
        "SELECT pg_export_snapshot();\n"
    )


# what the snapshot session is sent besides its queries (the gate's allowlist holds each)
END = "\\echo backupd-end\n"  # marks the end of an answer
PING = "SELECT 1;\n\\echo backupd-ping\n"  # keeps the snapshot session from timing out
COMMIT = "COMMIT;\n\\q\n"

KIND = PostgreSQL()
RESTORE = PostgresRestore()  # the restore side: jobs/pg_restore.py
