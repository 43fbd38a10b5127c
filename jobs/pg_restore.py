"""Restore side of the PostgreSQL kind: pg_restore reads the custom-format dump on stdin.

A restore brings the database's world with it (issue 12, decision 0016): the database is
created with the encoding and locale it had (recorded as facts at backup time), the roles
it refers to are checked on the target first (and created from the backup's globals on
request, and always in drills), one table comes with what it needs (jobs/pg_toc.py), and
a dump with many objects to lock is not restored in one transaction.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from backupd.catalogue import Check
from backupd.errors import RestoreError, UsageError, VerificationError
from jobs.base import DatabaseRestore, Lack, Peek, Setup, StreamFilter
from jobs.gating import RestoreGate
from jobs.pg_common import (
    FACT_TABLE,
    GLOBALS_ITEM,
    TABLES_SQL,
    WORLD_SQL,
    PostgresOptions,
    admin_psql,
    connection,
    count_sql,
    dbname_arg,
    psql_argv,
    split_fact_table,
    table_sizes,
    world_facts,
)
from jobs.pg_restore_sql import (
    DROP_AFTER,
    DROP_FIRST,
    EXISTING_SQL,
    EXISTS_SQL,
    MKTEMP,
    PRESENT_SQL,
    PROBE,
    create_database_sql,
    entries_json,
    gated_options,
    restore_requests,
    restore_role_setup,
    variables_argv,
)
from jobs.pg_roles import create_roles_sql, needed_roles, parse_globals
from jobs.pg_scratch import PostgresScratch
from jobs.pg_toc import SESSION_KINDS, checkable, find_table, parse_toc, select_table

if TYPE_CHECKING:
    from backupd.remote.shells import CommandShell

QUERY_TIMEOUT = 600.0
FILE_TIMEOUT = 60.0
TOC_TIMEOUT = 3600.0
# pg_restore --single-transaction holds a lock on every large object whose owner or
# privileges it sets, until the end; PostgreSQL's shared lock table (64 x 100 by default,
# for every session together) held 12,000 of them on an idle server, not 16,000 ("out of
# shared memory"). Above this many large objects a dump is restored in many transactions
# (decision 0016). Relations are not counted: 5,000 partitions and 2,000 tables with serial
# keys restored in one transaction here, and 5-13 times faster than in many.
LARGE_OBJECT_BUDGET = 5000
ROLES_HOW = (
    "create them first: `backupctl restore HOST/SOURCE --to DIR` writes the "
    "backup's globals.sql (`psql -f DIR/globals.sql` creates every role of the source, "
    "with its password), or add --create-roles to create just these (NOLOGIN, no "
    "password)"
)
DB_PROPERTIES = ("encoding", "lc_collate", "lc_ctype", "locale_provider", "icu_locale")


def single_transaction(req: DatabaseRestore) -> bool:
    """All or nothing, unless the dump holds more large objects than LARGE_OBJECT_BUDGET."""
    if req.table is not None:
        return True
    return int(req.facts.get("large_objects", 0)) <= LARGE_OBJECT_BUDGET


def describe(database: Mapping[str, Any]) -> str:
    """ "encoding SQL_ASCII, collate C, ctype C" (and the ICU locale when there is one)."""
    words = [
        f"encoding {database.get('encoding')}",
        f"collate {database.get('lc_collate')}",
        f"ctype {database.get('lc_ctype')}",
    ]
    if database.get("locale_provider") not in (None, "libc"):
        words.append(f"{database['locale_provider']} locale {database.get('icu_locale')}")
    return ", ".join(words)


def _owner(req: DatabaseRestore) -> str | None:
    """The role that owned the database, when a whole database is created with owners."""
    if req.table is not None or not req.keep_owners:
        return None
    owner = (req.facts.get("database") or {}).get("owner")
    return str(owner) if owner else None


def _wanted_roles(req: DatabaseRestore) -> list[str] | None:
    """The roles the dump refers to (pg_roles.needed_roles), and the database's owner."""
    roles = needed_roles(req.facts, req.keep_owners)
    owner = _owner(req)
    if roles is None or owner is None or owner in roles:
        return roles
    return sorted([*roles, owner])


def _grant_how(options: PostgresOptions, role: str) -> str:
    who = options.username or "the connected role"
    return (
        f'as the server\'s superuser: GRANT "{role}" TO "{who}" (backupctl host '
        "setup grants the owners of the source's databases; a superuser's cannot be)"
    )


class PostgresRestore:
    """The DatabaseKind of PostgreSQL (jobs/base.py)."""

    scratch = PostgresScratch()

    def restorable(self, item: str) -> bool:
        return item != GLOBALS_ITEM

    def restore_gate(self, options: PostgresOptions, source: str) -> RestoreGate:
        """As ``restore_username``, psql reading only fixed SQL (jobs/pg_restore_sql.py)."""
        admin = admin_psql(options)
        setup = restore_role_setup(options, source, admin, options.databases)
        return RestoreGate(
            gated_options(options), tuple(restore_requests(options, source)), tuple(setup)
        )

    def companion_items(self) -> tuple[str, ...]:
        return (GLOBALS_ITEM,)

    def resolve_table(self, table: str, recorded: Sequence[str]) -> str:
        known = {split_fact_table(k): k for k in recorded if FACT_TABLE.fullmatch(k)}
        schema, dot, name = table.partition(".")
        if dot and (schema, name) in known:
            return known[(schema, name)]
        if table in recorded:
            return table
        matches = [k for (_s, t), k in known.items() if t == table]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageError(
                f"table {table!r} is in several schemas ({', '.join(matches)}): "
                "name it as SCHEMA.TABLE"
            )
        shown = ", ".join(sorted(recorded)[:20]) or "none recorded"
        raise UsageError(f"no table {table!r} in this dump (tables: {shown})")

    def database_exists(self, options: PostgresOptions, shell: CommandShell, name: str) -> bool:
        return self._psql(options, shell, "postgres", {"db": name}, EXISTS_SQL).strip() != "0"

    def prepare_database(
        self, options: PostgresOptions, shell: CommandShell, req: DatabaseRestore
    ) -> None:
        """Create the database with the encoding and locale it had (or refuse, saying
        which the target lacks); a table goes into an existing database as it is."""
        if req.table is not None and self.database_exists(options, shell, req.database):
            return
        create, values = create_database_sql(req.facts, req.keep_owners)
        if req.replace and values:
            # --force: the database in the way goes only once its replacement can be made
            # (a locale the server lacks is found on a throwaway probe, not after the DROP)
            probe = {"db": f"{PROBE}_{secrets.token_hex(6)}", **values}
            self._create(options, shell, req, probe, create + DROP_AFTER)
        drop = DROP_FIRST if req.replace else ""
        self._create(options, shell, req, {"db": req.database, **values}, drop + create)

    def _create(
        self,
        options: PostgresOptions,
        shell: CommandShell,
        req: DatabaseRestore,
        variables: dict[str, str],
        sql: str,
    ) -> None:
        try:
            self._psql(options, shell, "postgres", variables, sql)
        except RestoreError as e:
            words = ("locale", "encoding", "collat")
            if len(variables) == 1 or not any(w in e.stderr_tail for w in words):
                raise
            raise RestoreError(
                f"cannot create database {req.database} on {shell.label} as it was backed up "
                f"({describe(req.facts['database'])}): that server lacks the locale or cannot "
                "use that encoding with it; install the locale there, or restore onto a server "
                "that has it",
                stderr_tail=e.stderr_tail,
            ) from None

    def restore_argv(
        self, options: PostgresOptions, req: DatabaseRestore, secret_path: str | None
    ) -> tuple[str, ...]:
        argv = (
            *options.exec_prefix(),
            options.pg_restore,
            *connection(options),
            "--no-password",
            "--exit-on-error",
            dbname_arg(req.database),
        )
        if single_transaction(req):
            argv += ("--single-transaction",)
        if not req.keep_owners:
            argv += ("--no-owner", "--no-privileges")
        if req.table is not None and req.replace:
            argv += ("--clean", "--if-exists")  # of the listed entries only (restore_setup)
        return argv

    def restore_secret(self, options: PostgresOptions) -> bytes:
        return b""

    def stream_filter(self, table: str | None) -> StreamFilter | None:
        return None  # pg_restore selects the entries itself (--use-list)

    # -- what the dump needs from the server -------------------------------------------
    def lacks(
        self, options: PostgresOptions, shell: CommandShell, req: DatabaseRestore
    ) -> list[Lack]:
        """Roles and extensions the dump needs that the target lacks, and the roles that
        exist but the connected role cannot act as (a restore role on a gated droplet:
        the database's owner it creates it for, the owners it gives objects back to; a
        superuser's objects are pg_restore's to refuse)."""
        roles = _wanted_roles(req) or []
        owner = _owner(req)
        extensions = sorted(req.facts.get("extensions") or {})
        have = self._present(options, shell, roles, extensions)
        lacks = [Lack(f"role {r}", True, ROLES_HOW) for r in roles if r not in have["roles"]]
        lacks += [
            Lack(f"membership in role {r}", False, _grant_how(options, r))
            for r in roles
            if r in have["roles"]
            and r not in have["acts"]
            and (r == owner or r not in have["supers"])
        ]
        lacks += [
            Lack(
                f"extension {x}",
                False,
                "install the package that provides it on that "
                "server (it is not in pg_available_extensions)",
            )
            for x in extensions
            if x not in have["extensions"]
        ]
        return lacks

    def _present(
        self, options: PostgresOptions, shell: CommandShell, roles: list[str], exts: list[str]
    ) -> dict[str, set[str]]:
        names = {"roles": json.dumps(roles), "exts": json.dumps(exts)}
        found = json.loads(self._psql(options, shell, "postgres", names, PRESENT_SQL).strip())
        return {k: set(v) for k, v in found.items()}

    def provide(
        self,
        options: PostgresOptions,
        shell: CommandShell,
        req: DatabaseRestore,
        companions: Mapping[str, bytes],
    ) -> list[Check]:
        """Create the roles the dump needs that the target lacks (pg_roles.py says how);
        for an older backup that did not record them, every role of the globals."""
        known = parse_globals(companions.get(GLOBALS_ITEM, b""))
        wanted = _wanted_roles(req)
        if wanted is None:
            wanted = sorted(known.inherit)
        missing = sorted(set(wanted) - self._present(options, shell, wanted, [])["roles"])
        if not missing:
            return []
        self._psql(options, shell, "postgres", {}, create_roles_sql(missing, known))
        detail = (
            f"created {len(missing)} role(s) the database needs (NOLOGIN, no password): "
            f"{', '.join(missing)}"
        )
        if unknown := [r for r in missing if r not in known.inherit]:
            detail += f"; not in the backup's globals, created by name only: {', '.join(unknown)}"
        return [Check("roles", detail)]

    # -- one table, and checks -----------------------------------------------------------
    @contextlib.contextmanager
    def restore_setup(
        self, options: PostgresOptions, shell: CommandShell, req: DatabaseRestore, peek: Peek
    ) -> Iterator[Setup]:
        """For one table: read the dump's table of contents and list the entries that
        restore the table with what it needs (pg_toc.py) for pg_restore --use-list."""
        if req.table is None:
            yield Setup()
            return
        entries = parse_toc(self._read_toc(options, shell, peek))
        schema, name = split_fact_table(req.table)
        table = find_table(entries, schema, name)
        present = self._existing(options, shell, req.database, checkable(entries, table))
        chosen = select_table(entries, table, present)
        brought = [e for e in chosen.entries if e.kind not in SESSION_KINDS and e is not table]
        checks = [Check("table", f"{req.table} with {len(brought)} object(s) it needs or owns")]
        if chosen.left_out:
            left = "; ".join(e.label for e in chosen.left_out)
            checks.append(Check("left out", f"needs what is not restored: {left}"))
        with _tool_file(options, shell, chosen.use_list()) as path:
            yield Setup(("--use-list", path), tuple(checks))

    def _read_toc(self, options: PostgresOptions, shell: CommandShell, peek: Peek) -> str:
        with _tool_file(options, shell, b"") as out:
            argv = (
                *options.exec_prefix(),
                options.pg_restore,
                "--list",
                "--verbose",
                "--file",
                out,
            )
            result = peek(argv)  # pg_restore stops reading after the table of contents
            if result.exit_status != 0:
                raise RestoreError(
                    f"pg_restore --list on {shell.label} failed (exit {result.exit_status})",
                    stderr_tail=result.output_tail(),
                )
            read = shell.run((*options.exec_prefix(), "cat", "--", out), timeout=FILE_TIMEOUT)
        if not read.ok:
            raise RestoreError(
                f"cannot read pg_restore's listing on {shell.label}", stderr_tail=read.stderr_tail()
            )
        return read.stdout.decode(errors="replace")

    def _existing(
        self, options: PostgresOptions, shell: CommandShell, db: str, entries: list[Any]
    ) -> set[int]:
        """Which of these dump entries the database already has (search_path empty, so
        names are formatted as pg_dump formatted them)."""
        if not entries:
            return set()
        found = self._psql(options, shell, db, {"entries": entries_json(entries)}, EXISTING_SQL)
        return {int(x) for x in found.split()}

    def extra_checks(
        self, options: PostgresOptions, shell: CommandShell, req: DatabaseRestore
    ) -> list[Check]:
        """A whole database: its encoding and locale, and its large objects, as recorded."""
        recorded = req.facts.get("database") or {}
        if req.table is not None or not recorded.get("encoding"):
            return []
        now = world_facts(self._psql(options, shell, req.database, {}, WORLD_SQL).strip())
        wrong = [
            f"{k} {now['database'].get(k)}, recorded {recorded.get(k)}"
            for k in DB_PROPERTIES
            if now["database"].get(k) != recorded.get(k)
        ]
        if wrong:
            raise VerificationError(
                f"{req.database} on {shell.label} is not the database that "
                f"was backed up: {'; '.join(wrong)}"
            )
        checks = [Check("database", f"{describe(recorded)} as recorded")]
        if (objects := int(req.facts.get("large_objects", 0))) != now["large_objects"]:
            raise VerificationError(
                f"{req.database} on {shell.label} has {now['large_objects']} "
                f"large object(s), recorded {objects}"
            )
        if objects:
            checks.append(Check("large objects", f"{objects} as recorded"))
        return checks

    # -- reading the restored database ---------------------------------------------------
    def row_counts(
        self, options: PostgresOptions, shell: CommandShell, name: str, tables: Sequence[str]
    ) -> dict[str, int]:
        out = self._psql(options, shell, name, {}, count_sql(tables)).split()
        return {key: int(n) for key, n in zip(tables, out, strict=True)}

    def tables(self, options: PostgresOptions, shell: CommandShell, name: str) -> set[str]:
        return set(table_sizes(self._psql(options, shell, name, {}, TABLES_SQL).strip()))

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
        argv = psql_argv(options, db) + variables_argv(variables)
        result = shell.run(argv, timeout=QUERY_TIMEOUT, stdin=sql.encode())
        if not result.ok:
            raise RestoreError(
                f"psql on {shell.label} failed (exit {result.exit_status})",
                stderr_tail=result.stderr_tail(),
            )
        return result.stdout.decode(errors="replace")


@contextlib.contextmanager
def _tool_file(options: PostgresOptions, shell: CommandShell, content: bytes) -> Iterator[str]:
    """A private temporary file where the client tools run (as the same user, in the same
    container), holding ``content``; removed afterwards."""
    prefix = options.exec_prefix()
    make = (*prefix, "sh", "-c", MKTEMP)
    made = shell.run(make, timeout=FILE_TIMEOUT, stdin=content)
    path = made.stdout.decode().strip()
    if not made.ok or not path.startswith("/"):
        raise RestoreError(
            f"{shell.label}: cannot create a temporary file for pg_restore",
            stderr_tail=made.stderr_tail(),
        )
    try:
        yield path
    finally:
        shell.run((*prefix, "rm", "-f", "--", path), timeout=FILE_TIMEOUT)
