"""What a PostgreSQL restore sends the server, fixed: the SQL texts (values reach them
only as psql variables), the temporary-file commands, and, from these same pieces, the
requests a gated droplet's restore allowlist holds (decision 0022).

A restore onto a gated droplet connects as the source's ``restore_username`` (created by
`backupctl host setup`: LOGIN CREATEDB, no superuser, a member of the roles that own the
source's databases), with the operator's restore key. The gate lets psql read only these
texts (its meta-commands, ``\\!`` above all, never reach it) and runs pg_restore with the
dump on stdin: what the dump holds runs with that role's rights and no more.
"""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Iterator, Sequence
from typing import Any

from backupd.catalogue import Facts
from jobs.gating import GateRequest, Param, Session, say
from jobs.pg_common import (
    TABLES_SQL,
    WORLD_SQL,
    PostgresOptions,
    connection,
    psql_head,
    sql_literal,
)

# psql variables a restore sets, in the order it gives them (the gate's template order)
PSQL_VARS = ("db", "owner", "enc", "coll", "ctype", "loc", "rules", "roles", "exts", "entries")
EXISTS_SQL = "SELECT count(*) FROM pg_database WHERE datname = :'db';"
# of a JSON list of roles and one of extensions (psql variables), those the server has,
# the roles the connected role may act as (own, ALTER ... OWNER TO) and the superusers
PRESENT_SQL = """SELECT json_build_object(
 'roles', (SELECT coalesce(json_agg(rolname), '[]') FROM pg_roles
           WHERE rolname IN (SELECT json_array_elements_text(:'roles'::json))),
 'acts', (SELECT coalesce(json_agg(rolname), '[]') FROM pg_roles
          WHERE rolname IN (SELECT json_array_elements_text(:'roles'::json))
            AND pg_has_role(rolname, 'MEMBER')),
 'supers', (SELECT coalesce(json_agg(rolname), '[]') FROM pg_roles
            WHERE rolname IN (SELECT json_array_elements_text(:'roles'::json)) AND rolsuper),
 'extensions', (SELECT coalesce(json_agg(name), '[]') FROM pg_available_extensions
                WHERE name IN (SELECT json_array_elements_text(:'exts'::json))));"""
# of a JSON list of dump entries [{"id", "kind", "s", "n"}], the ids the database has
# (search_path empty, so names are formatted as pg_dump formatted them)
EXISTING_SQL = """SET standard_conforming_strings = on;
SET search_path = '';
SELECT id FROM json_to_recordset(:'entries'::json) AS v(id int, kind text, s text, n text)
WHERE CASE
 WHEN kind = 'SCHEMA' THEN pg_catalog.to_regnamespace(pg_catalog.quote_ident(n)) IS NOT NULL
 WHEN kind = 'EXTENSION' THEN EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = n)
 WHEN kind IN ('TYPE', 'DOMAIN') THEN
   pg_catalog.to_regtype(pg_catalog.quote_ident(s) || '.' || pg_catalog.quote_ident(n)) IS NOT NULL
 WHEN kind = 'SEQUENCE' THEN
   pg_catalog.to_regclass(pg_catalog.quote_ident(s) || '.' || pg_catalog.quote_ident(n)) IS NOT NULL
 WHEN kind = 'COLLATION' THEN pg_catalog.to_regcollation(
   pg_catalog.quote_ident(s) || '.' || pg_catalog.quote_ident(n)) IS NOT NULL
 WHEN kind IN ('FUNCTION', 'PROCEDURE', 'AGGREGATE') THEN EXISTS (
   SELECT FROM pg_catalog.pg_proc p WHERE p.oid::pg_catalog.regprocedure::text =
     pg_catalog.quote_ident(s) || '.' || pg_catalog.quote_ident(pg_catalog.split_part(n, '(', 1))
     || '(' || pg_catalog.substr(n, pg_catalog.strpos(n, '(') + 1))
 ELSE false END;"""
PROBE = "backupd_probe"  # --force makes and drops PROBE_<hex> first (jobs/pg_restore.py)
DROP_FIRST = 'DROP DATABASE IF EXISTS :"db" WITH (FORCE);\n'
DROP_AFTER = '\nDROP DATABASE :"db";'
# a private file for pg_restore's listing or --use-list, where the tools run (TMPFILE in
# the gate): its path is printed
MKTEMP = 'umask 077 && f=$(mktemp /tmp/backupd.XXXXXXXXXX) && cat > "$f" && printf %s "$f"'


def create_database_sql(facts: Facts, keep_owners: bool) -> tuple[str, dict[str, str]]:
    """CREATE DATABASE as the database was (template0: any encoding and locale), owned by
    the role that owned it when owners are kept: (SQL, psql variables)."""
    db = facts.get("database") or {}
    owner = str(db.get("owner") or "") if keep_owners else ""
    with_owner = (' OWNER :"owner"', {"owner": owner}) if owner else ("", {})
    if not db.get("encoding"):  # an older backup: the target's defaults
        return f'CREATE DATABASE :"db"{with_owner[0]};', dict(with_owner[1])
    sql = f"CREATE DATABASE :\"db\"{with_owner[0]} TEMPLATE template0 ENCODING :'enc'"
    values = {**with_owner[1], "enc": str(db["encoding"])}
    for key, clause, var in (
        ("lc_collate", "LC_COLLATE", "coll"),
        ("lc_ctype", "LC_CTYPE", "ctype"),
    ):
        if db.get(key):
            sql += f" {clause} :'{var}'"
            values[var] = str(db[key])
    provider = db.get("locale_provider")
    if provider in ("icu", "builtin"):
        sql += f" LOCALE_PROVIDER {provider} {provider.upper()}_LOCALE :'loc'"
        values["loc"] = str(db.get("icu_locale") or "")
        if db.get("icu_rules"):
            sql += " ICU_RULES :'rules'"
            values["rules"] = str(db["icu_rules"])
    return sql + ";", values


def _every_create() -> Iterator[str]:
    """Every text create_database_sql can make, each as it is sent (plain, after the
    DROP of --force, and as the probe that --force makes and drops first)."""
    given = ("", "x")  # a property recorded or not
    shapes = itertools.product(given, given, given, ("libc", "icu", "builtin"), given, given)
    for enc, coll, ctype, provider, rules, owner in shapes:
        database = {"encoding": enc, "lc_collate": coll, "lc_ctype": ctype, "owner": owner}
        database |= {"locale_provider": provider, "icu_rules": rules}
        sql, _values = create_database_sql({"database": database}, keep_owners=bool(owner))
        yield from (sql, DROP_FIRST + sql, sql + DROP_AFTER)


def ordered(variables: dict[str, str]) -> list[tuple[str, str]]:
    """psql variables in PSQL_VARS order (ValueError for another name)."""
    return sorted(variables.items(), key=lambda kv: PSQL_VARS.index(kv[0]))


def gated_options(options: PostgresOptions) -> PostgresOptions:
    """The options a restore onto a gated droplet runs with: as ``restore_username``, by
    its peer login or socket, never through sudo."""
    update = {"username": options.restore_username, "sudo_user": None}
    return options.model_copy(update=update)


def restore_requests(options: PostgresOptions, source: str) -> list[GateRequest]:
    """The restore key's requests for this source (the restore allowlist), into the
    source's databases or names that start with theirs and ``_`` (any name when it lists
    none; the role's rights bound it): psql reading only the texts above, pg_restore
    reading the dump on stdin, its listing and --use-list in a TMPFILE, that file made,
    read and removed."""
    gated = gated_options(options)
    prefix = gated.exec_prefix()
    listed = options.databases or None  # none listed: any name (the role bounds it)
    database = Param("database", "pg_dbname", values=listed, prefixes=options.databases)
    server = Param(  # psql also asks the server's own database (exists? the roles?)
        "database",
        "pg_dbname",
        values=(*listed, "postgres") if listed else None,
        prefixes=options.databases,
    )
    variables = [
        Param(v, "psql_var", flag="--set", optional=True, var=v)
        if v != "db"
        else Param(  # what CREATE and DROP DATABASE name, and --force's probe
            v,
            "psql_var",
            flag="--set",
            optional=True,
            var=v,
            values=listed,
            prefixes=(*options.databases, PROBE) if listed else (),
        )
        for v in PSQL_VARS
    ]
    texts = (EXISTS_SQL, PRESENT_SQL, EXISTING_SQL, WORLD_SQL, TABLES_SQL, *_every_create())
    flags = ("--single-transaction", "--clean", "--if-exists")
    tmp = Param("file", "tmpfile")
    pg_restore: tuple[str | Param, ...] = (
        *prefix,
        gated.pg_restore,
        *connection(gated),
        "--no-password",
        "--exit-on-error",
        database,
        *(Param(f, "choice", values=(f,), optional=True) for f in flags),
        Param("list", "tmpfile", flag="--use-list", optional=True),
    )
    name = f"{source}: restore"
    return [
        GateRequest(f"{name}: psql", (*psql_head(gated), server, *variables), Session(texts, True)),
        GateRequest(f"{name}: pg_restore", pg_restore, stdin_passes=True),
        GateRequest(
            f"{name}: list the dump",
            (
                *prefix,
                gated.pg_restore,
                "--list",
                "--verbose",
                Param("out", "tmpfile", flag="--file"),
            ),
            stdin_passes=True,
        ),
        GateRequest(f"{name}: make a file", (*prefix, "sh", "-c", MKTEMP), stdin_passes=True),
        GateRequest(f"{name}: read a file", (*prefix, "cat", "--", tmp)),
        GateRequest(f"{name}: remove a file", (*prefix, "rm", "-f", "--", tmp)),
    ]


def restore_role_setup(
    options: PostgresOptions, source: str, admin: Sequence[str], databases: Sequence[str]
) -> list[str]:
    """Shell lines (host setup's script, run as root) that make the restore role: LOGIN
    CREATEDB and nothing more, a member of the roles that own ``databases`` (all of the
    server's when none are listed) unless those are superusers."""
    role = options.restore_username
    ident = '"' + role.replace('"', '""') + '"'
    which = (
        f"datname IN ({', '.join(sql_literal(d) for d in databases)})"
        if databases
        else "NOT datistemplate"
    )
    owners = f"r.oid IN (SELECT datdba FROM pg_database WHERE {which})"  # noqa: S608
    grant_owners = (  # the owners' names as the server has them, quoted by format('%I')
        "SELECT format('GRANT %I TO %I;', r.rolname, "  # noqa: S608  (literals only)
        f"{sql_literal(role)}) FROM pg_roles r WHERE {owners} AND NOT {MORE_THAN_AN_OWNER} \\gexec"
    )
    skipped = (  # said, not granted: the restore role could then become more than owners
        "SELECT 'not granted to the restore role (it could then create roles, or act as a "  # noqa: S608
        "superuser or a pg_ role): ' || string_agg(r.rolname, ', ') FROM pg_roles r "
        f"WHERE {owners} AND {MORE_THAN_AN_OWNER} HAVING count(*) > 0;"
    )
    failed = shlex.quote(f"{source}: creating the restore role {role} failed (see above)")
    return [
        f"{shlex.join(admin)} --dbname=postgres <<'BACKUPD_SQL' || die {failed}",
        f"DO $$BEGIN CREATE ROLE {ident} LOGIN CREATEDB; EXCEPTION WHEN duplicate_object "
        f"THEN ALTER ROLE {ident} LOGIN CREATEDB NOSUPERUSER NOCREATEROLE; END$$;",
        grant_owners,
        skipped,
        "BACKUPD_SQL",
        say(
            f"{source}: role {role} restores (CREATEDB, a member of its databases' owners); "
            f"peer authentication needs the login mapped to {role} too (pg_ident.conf "
            "and pg_hba.conf: docs/droplet-setup.md step 7)"
        ),
    ]


# an owner the restore role must not become (by membership, SET ROLE): a superuser, one
# that may create roles (before PostgreSQL 16 such a role may grant itself
# pg_execute_server_program: programs on the droplet), one of the predefined pg_ roles
# (server files, programs, all data), or a member of any of those
MORE_THAN_AN_OWNER = (
    "EXISTS (SELECT FROM pg_roles p WHERE pg_has_role(r.oid, p.oid, 'MEMBER') AND "
    "(p.rolsuper OR p.rolcreaterole OR (p.rolname LIKE 'pg\\_%' "
    "AND p.rolname <> 'pg_database_owner')))"
)


def variables_argv(variables: dict[str, str]) -> tuple[str, ...]:
    """``--set NAME=VALUE`` pairs in the gate's order."""
    argv: tuple[str, ...] = ()
    for k, v in ordered(variables):
        argv += ("--set", f"{k}={v}")
    return argv


def entries_json(entries: Sequence[Any]) -> str:
    """Dump entries (jobs/pg_toc.py) as EXISTING_SQL's :'entries'."""
    import json

    return json.dumps([{"id": e.id, "kind": e.kind, "s": e.schema, "n": e.name} for e in entries])
