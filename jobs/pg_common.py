"""What the PostgreSQL dump and restore sides share: options, how the client tools are
called, and the SQL that reads a database's facts.

Names are data, never syntax (issue 12). A database name reaches libpq only as a quoted
``dbname='...'`` connection string: libpq reads any ``--dbname`` that contains ``=`` (or
starts with ``postgresql://``) as a connection string, so ``shop k=v`` given bare is
parsed, not looked up. Listings come back NUL-separated or as JSON, so a name with a
newline or ``|`` is one name; SQL gets names as psql variables or ``%I``-quoted keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from backupd.config.units import Duration
from backupd.errors import UsageError
from jobs.base import ExecOptions

GLOBALS_ITEM = "_globals"


class PostgresOptions(ExecOptions):
    databases: tuple[str, ...] = ()  # empty: every database that accepts connections
    globals: bool = True  # also pull roles and tablespaces (pg_dumpall --globals-only)
    # false: the globals without password hashes (--no-role-passwords), which a role with
    # pg_read_all_data can dump; restored roles then need their passwords set again
    role_passwords: bool = True
    socket_dir: str | None = None  # pg's --host; the droplet's default socket when unset
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str | None = None  # database role (--username)
    # the role a restore onto a gated droplet connects as (host setup makes it: CREATEDB,
    # a member of its databases' owners; decision 0022)
    restore_username: str = Field(default="backupd_restore", min_length=1)
    pg_dump: str = "pg_dump"
    pg_dumpall: str = "pg_dumpall"
    psql: str = "psql"
    pg_restore: str = "pg_restore"  # restores (--into-db, --to-host --database, drills)
    count_rows: bool = True  # exact row counts in the dump's own snapshot (reads every table)
    facts_timeout: Duration = 3600.0
    # a table locked by another session (a migration's ALTER TABLE) fails the dump after
    # this long, with the reason, instead of waiting out the stream's idle timeout
    lock_timeout: Duration = Field(default=120.0, ge=1.0)
    # the snapshot session waits in a transaction while pg_dump runs; backupd pings it, and
    # the server ends it after this long without a ping (backupd gone, link cut), giving
    # the snapshot back instead of blocking vacuum until the droplet's sshd notices
    session_timeout: Duration = Field(default=60.0, ge=4.0)

    def lock_timeout_ms(self) -> int:
        return int(self.lock_timeout * 1000)


def connection(options: PostgresOptions) -> tuple[str, ...]:
    argv: tuple[str, ...] = ()
    if options.socket_dir:
        argv += ("--host", options.socket_dir)
    if options.port:
        argv += ("--port", str(options.port))
    if options.username:
        argv += ("--username", options.username)
    return argv


def conninfo_value(value: str) -> str:
    """A libpq connection-string value: single-quoted, ``\\`` and ``'`` escaped."""
    if "\x00" in value:
        raise UsageError(f"a PostgreSQL name cannot contain a NUL character: {value!r}")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def dbname_arg(name: str) -> str:
    """``--dbname=dbname='NAME'``: the database NAME exactly, whatever it contains (a bare
    name with ``=`` would be parsed as a connection string; one starting with ``-`` as an
    option). Every other connection setting still comes from ``connection()``."""
    return f"--dbname=dbname={conninfo_value(name)}"


def psql_argv(options: PostgresOptions, db: str, *extra: str) -> tuple[str, ...]:
    """psql, unaligned, tuples only, no psqlrc, stopping at the first error."""
    return (*psql_head(options), dbname_arg(db), *extra)


def psql_head(options: PostgresOptions) -> tuple[str, ...]:
    """psql_argv up to the database argument (the gate's template puts a parameter there)."""
    return (
        *options.exec_prefix(),
        options.psql,
        *connection(options),
        "--no-psqlrc",
        "--no-align",
        "--tuples-only",
        "--quiet",
        "--no-password",
        "--set",
        "ON_ERROR_STOP=1",
    )


def admin_psql(options: PostgresOptions) -> tuple[str, ...]:
    """psql as the server's superuser, run as root on the droplet by `backupctl host
    setup` (runuser to postgres, or in the source's container)."""
    where: tuple[str, ...] = ("--host", options.socket_dir) if options.socket_dir else ()
    where += ("--port", str(options.port)) if options.port else ()
    admin = (
        (options.docker, "exec", "-i", options.container, options.psql, "--username=postgres")
        if options.container
        else ("runuser", "-u", "postgres", "--", options.psql)
    )
    return (*admin, *where, "--no-psqlrc", "--set", "ON_ERROR_STOP=1")


# Tables as one JSON object {"schema.table" (format('%I.%I')): total bytes}: one line
# whatever the names hold (a newline, "|", quotes).
TABLES_SQL = (
    "SELECT coalesce(json_object_agg(format('%I.%I', n.nspname, c.relname), "
    "pg_total_relation_size(c.oid)), '{}') "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%';"
)

# What a database is and needs beyond its tables, as one JSON line (issue 12): its own
# properties (recreated on restore), the roles it refers to (pg_shdepend: owners 'o',
# privileges 'a'/'i', policies 'r'; a user mapping names its role even without owners),
# the extensions it uses, and how many objects a restore must lock.
WORLD_SQL = """SELECT json_build_object(
 'database', (SELECT (to_jsonb(d) - 'datacl') || jsonb_build_object('encoding',
     pg_encoding_to_char(d.encoding), 'owner', pg_get_userbyid(d.datdba))
     FROM pg_database d WHERE d.datname = current_database()),
 'roles', (SELECT coalesce(json_object_agg(k, r), '{}') FROM (
     SELECT CASE WHEN s.deptype = 'r' OR s.classid = 'pg_user_mapping'::regclass THEN 'always'
                 WHEN s.deptype IN ('a', 'i') THEN 'privileges' ELSE 'owner' END AS k,
            json_agg(DISTINCT a.rolname ORDER BY a.rolname) AS r
     FROM pg_shdepend s JOIN pg_roles a ON a.oid = s.refobjid
     WHERE s.refclassid = 'pg_authid'::regclass
       AND s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
     GROUP BY 1) g),
 'bootstrap_role', (SELECT rolname FROM pg_roles WHERE oid = 10),
 'extensions', (SELECT coalesce(json_object_agg(extname, extversion), '{}') FROM pg_extension),
 'large_objects', (SELECT count(*) FROM pg_largeobject_metadata),
 'relations', (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND n.nspname NOT LIKE 'pg_toast%'));"""


def world_facts(line: str) -> dict[str, Any]:
    """WORLD_SQL's JSON line -> the facts recorded with the archive (keys: database,
    roles, extensions, large_objects, relations)."""
    raw = json.loads(line)
    row = raw.get("database") or {}
    provider = {"c": "libc", "i": "icu", "b": "builtin"}.get(str(row.get("datlocprovider", "c")))
    database = {
        "encoding": row.get("encoding"),
        "lc_collate": row.get("datcollate"),
        "lc_ctype": row.get("datctype"),
        "locale_provider": provider,
        # PostgreSQL 15-16 call it daticulocale, 17 datlocale
        "icu_locale": row.get("daticulocale") or row.get("datlocale"),
        "icu_rules": row.get("daticurules"),
        "owner": row.get("owner"),
    }
    roles = {k: sorted(v) for k, v in (raw.get("roles") or {}).items()}
    if raw.get("bootstrap_role"):  # its ownerships are not in pg_shdepend (it is pinned)
        roles["owner"] = sorted({*roles.get("owner", []), raw["bootstrap_role"]})
    return {
        "database": {k: v for k, v in database.items() if v is not None},
        "roles": roles,
        "extensions": raw.get("extensions") or {},
        "large_objects": int(raw.get("large_objects") or 0),
        "relations": int(raw.get("relations") or 0),
    }


def table_sizes(line: str) -> dict[str, int]:
    """TABLES_SQL's JSON line -> {fact key: bytes}, sorted by key."""
    return {k: int(v) for k, v in sorted(json.loads(line or "{}").items())}


def count_sql(tables: Sequence[str]) -> str:
    """One ``count(*)`` per recorded table key, one output line each, in order."""
    for key in tables:
        split_fact_table(key)  # only recorded, %I-quoted names reach the SQL
    return "".join(f"SELECT count(*) FROM {key};\n" for key in tables)  # noqa: S608


# format('%I.%I') as recorded in the facts: safe to use as an identifier in SQL
_IDENT = r'(?:[a-z_][a-z0-9_$]*|"(?:[^"]|"")+")'
FACT_TABLE = re.compile(rf"({_IDENT})\.({_IDENT})", re.DOTALL)


def split_fact_table(key: str) -> tuple[str, str]:
    """``"My Schema".t`` -> ("My Schema", "t"); ValueError if not a recorded table key."""
    m = FACT_TABLE.fullmatch(key)
    if not m:
        raise ValueError(f"not a schema-qualified table: {key!r}")
    return unquote(m.group(1)), unquote(m.group(2))


def unquote(ident: str) -> str:
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident


def sql_literal(value: str) -> str:
    """A standard-conforming SQL string literal (the session sets
    standard_conforming_strings = on)."""
    if "\x00" in value:
        raise UsageError(f"a PostgreSQL name cannot contain a NUL character: {value!r}")
    return "'" + value.replace("'", "''") + "'"
