"""Roles a database needs, and how backupd creates the ones a target server lacks.

A dump refers to roles it does not contain: owners (``ALTER ... OWNER TO``), grantees
(``GRANT``), policy roles (``CREATE POLICY ... TO app_reader``). They live in the
cluster's globals (``pg_dumpall --globals-only``). Replaying that file as it is on a
server that is not the source would set passwords, make superusers and create
tablespaces at the source's paths, so backupd replays only this much of it: each role
the database needs that the target lacks, created ``NOLOGIN`` and without a password or
any other attribute (``NOINHERIT`` is kept), plus memberships between the roles it
created. Roles that exist on the target are never altered. Decision 0016.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from backupd.catalogue import Facts

_IDENT = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")'
_CREATE = re.compile(rf"CREATE ROLE ({_IDENT})", re.DOTALL)
_ALTER = re.compile(rf"ALTER ROLE ({_IDENT}) WITH (.*)", re.DOTALL)
_GRANT = re.compile(rf"GRANT ({_IDENT}) TO ({_IDENT})(?:\s.*)?", re.DOTALL)
_LITERAL = re.compile(r"'(?:[^']|'')*'")


@dataclass
class GlobalRoles:
    """What the globals say about roles: each role (name -> inherits), memberships."""

    inherit: dict[str, bool] = field(default_factory=dict)
    memberships: list[tuple[str, str]] = field(default_factory=list)  # (role, member)


def statements(sql: str) -> Iterator[str]:
    """The statements of a plain SQL dump, quotes and ``--`` comments respected."""
    buf: list[str] = []
    quote = ""
    i = 0
    while i < len(sql):
        c = sql[i]
        if quote:
            buf.append(c)
            if c == quote:
                quote = ""  # a doubled quote closes and reopens: same result
        elif c in "'\"":
            quote = c
            buf.append(c)
        elif sql.startswith("--", i) or (c == "\\" and (i == 0 or sql[i - 1] == "\n")):
            # a comment, or a psql meta-command line (pg_dumpall's \restrict)
            i = sql.find("\n", i)
            if i < 0:
                break
            continue
        elif c == ";":
            if text := "".join(buf).strip():
                yield text
            buf = []
        else:
            buf.append(c)
        i += 1
    if text := "".join(buf).strip():
        yield text


def _ident(token: str) -> str:
    return token[1:-1].replace('""', '"') if token.startswith('"') else token


def parse_globals(dump: bytes) -> GlobalRoles:
    """The roles and memberships in ``pg_dumpall --globals-only`` output."""
    found = GlobalRoles()
    for stmt in statements(dump.decode(errors="replace")):
        if m := _CREATE.fullmatch(stmt):
            found.inherit.setdefault(_ident(m.group(1)), True)
        elif m := _ALTER.fullmatch(stmt):
            words = _LITERAL.sub("''", m.group(2)).upper().split()
            found.inherit[_ident(m.group(1))] = "NOINHERIT" not in words
        elif m := _GRANT.fullmatch(stmt):
            found.memberships.append((_ident(m.group(1)), _ident(m.group(2))))
    return found


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def needed_roles(facts: Facts, keep_owners: bool) -> list[str] | None:
    """The roles a restore of this dump refers to (None: not recorded, an older backup).
    Without owners and privileges (``--no-owner --no-privileges``) only the roles named
    elsewhere (policies, user mappings) are needed."""
    roles = facts.get("roles")
    if not isinstance(roles, Mapping):
        return None
    kinds = ("always", "owner", "privileges") if keep_owners else ("always",)
    return sorted({r for k in kinds for r in roles.get(k, [])})


def _inherit(known: GlobalRoles, name: str) -> str:
    return "" if known.inherit.get(name, True) else " NOINHERIT"


def create_roles_sql(names: Sequence[str], known: GlobalRoles) -> str:
    """SQL that creates ``names`` (none of which exists yet): NOLOGIN, no password, and
    the memberships among them that the globals record."""
    made = set(names)
    lines = [f"CREATE ROLE {quote_ident(n)} NOLOGIN{_inherit(known, n)};" for n in names]
    lines += [
        f"GRANT {quote_ident(role)} TO {quote_ident(member)};"
        for role, member in known.memberships
        if role in made and member in made
    ]
    return "\n".join(lines) + "\n"
