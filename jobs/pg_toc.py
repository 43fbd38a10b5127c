"""One table of a custom-format dump, with what it needs: the entries to restore, chosen
from the dump's table of contents (``pg_restore --list --verbose``).

``pg_restore --table`` restores a table's definition and rows only: a column of an enum
type, a domain, a sequence default or a function in a default then fails ("type
public.mood does not exist"). Here the table brings, from the dump's own dependency
graph, everything it depends on (schemas, types, domains, sequences, functions,
collations, extensions, a parent table's definition), minus what the target database
already has, and everything that belongs to it (defaults, constraints, indexes, triggers,
policies, row security, comments, privileges, its sequences and their values). What
belongs to it but needs another table's rows or definition (a foreign key to a table
that is not restored, a partition's attachment) is left out, and said so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from backupd.errors import RestoreError

# pg_restore prints each entry as "ID; TABLEOID OID DESC SCHEMA NAME OWNER"; DESC may
# have several words, NAME may hold spaces (a newline shows as a space), OWNER is last.
_DESCS = sorted(
    (
        "MATERIALIZED VIEW DATA",
        "SEQUENCE OWNED BY",
        "DEFAULT ACL",
        "FK CONSTRAINT",
        "CHECK CONSTRAINT",
        "TABLE DATA",
        "TABLE ATTACH",
        "INDEX ATTACH",
        "SEQUENCE SET",
        "ROW SECURITY",
        "MATERIALIZED VIEW",
        "FOREIGN TABLE",
        "FOREIGN DATA WRAPPER",
        "SERVER",
        "FOREIGN SERVER",
        "USER MAPPING",
        "EVENT TRIGGER",
        "SECURITY LABEL",
        "OPERATOR CLASS",
        "OPERATOR FAMILY",
        "TEXT SEARCH CONFIGURATION",
        "TEXT SEARCH DICTIONARY",
        "TEXT SEARCH PARSER",
        "TEXT SEARCH TEMPLATE",
        "BLOB METADATA",
        "LARGE OBJECT",
        "PUBLICATION TABLE",
        "PUBLICATION TABLES IN SCHEMA",
        "ACCESS METHOD",
        "PROCEDURAL LANGUAGE",
    ),
    key=len,
    reverse=True,
)
_ENTRY = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
_DEPENDS = re.compile(r"^;\s*depends on:((?: \d+)+)\s*$")

# what belongs to the table (entries that depend on it directly)
OWN_KINDS = frozenset(
    {
        "TABLE DATA",
        "DEFAULT",
        "CONSTRAINT",
        "CHECK CONSTRAINT",
        "FK CONSTRAINT",
        "INDEX",
        "TRIGGER",
        "POLICY",
        "ROW SECURITY",
        "COMMENT",
        "ACL",
        "SECURITY LABEL",
        "SEQUENCE",
        "SEQUENCE OWNED BY",
        "SEQUENCE SET",
        "RULE",
        "STATISTICS",
        "TABLE ATTACH",
        "INDEX ATTACH",
    }
)
# what comes along with anything restored (its comment, privileges, a sequence's value)
DECORATION_KINDS = frozenset(
    {"COMMENT", "ACL", "SECURITY LABEL", "SEQUENCE SET", "SEQUENCE OWNED BY"}
)
RELATION_KINDS = frozenset({"TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE"})
DATA_KINDS = frozenset({"TABLE DATA", "MATERIALIZED VIEW DATA", "BLOBS", "BLOB", "LARGE OBJECT"})
SESSION_KINDS = frozenset({"ENCODING", "STDSTRINGS", "SEARCHPATH"})
# dependencies the target database may already have (checked there, then not restored)
CHECKABLE_KINDS = frozenset(
    {
        "SCHEMA",
        "TYPE",
        "DOMAIN",
        "FUNCTION",
        "PROCEDURE",
        "AGGREGATE",
        "SEQUENCE",
        "COLLATION",
        "EXTENSION",
    }
)


@dataclass
class TocEntry:
    id: int
    kind: str  # pg_dump's description: "TABLE", "TABLE DATA", "FK CONSTRAINT" ...
    schema: str  # "-" for objects outside a schema
    rest: str  # "NAME OWNER"
    line: str  # as listed (what --use-list reads)
    deps: tuple[int, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.rest.rpartition(" ")[0] if " " in self.rest else self.rest

    @property
    def label(self) -> str:
        where = "" if self.schema == "-" else f"{self.schema}."
        return f"{self.kind.lower()} {where}{self.name}"


def parse_toc(listing: str) -> list[TocEntry]:
    """``pg_restore --list --verbose`` output -> its entries, in order, with dependencies."""
    entries: list[TocEntry] = []
    for line in listing.splitlines():
        if (dep := _DEPENDS.match(line)) and entries:
            entries[-1].deps = tuple(int(x) for x in dep.group(1).split())
            continue
        m = _ENTRY.match(line)
        if not m:
            continue
        text = m.group(4)
        kind = next((d for d in _DESCS if text.startswith(d + " ")), text.split(" ", 1)[0])
        schema, _, rest = text[len(kind) + 1 :].partition(" ")
        entries.append(TocEntry(int(m.group(1)), kind, schema, rest, line))
    return entries


def find_table(entries: Sequence[TocEntry], schema: str, table: str) -> TocEntry:
    """The TABLE entry of ``schema.table`` (RestoreError when absent or ambiguous)."""
    shown = " ".join(table.splitlines()) if "\n" in table or "\r" in table else table
    shown = shown.replace("\r", " ")
    found = [
        e
        for e in entries
        if e.kind in RELATION_KINDS - {"VIEW"}
        and e.schema == schema
        and e.rest.startswith(shown + " ")
    ]
    exact = [e for e in found if e.rest.count(" ") == shown.count(" ") + 1]
    if len(exact) == 1:
        return exact[0]
    if not found:
        raise RestoreError(f"table {schema}.{table} is not in this dump's table of contents")
    raise RestoreError(
        f"table {schema}.{table}: several entries of the dump's table of "
        "contents could be it; restore the dump with --to DIR and choose by "
        "hand (pg_restore --list)"
    )


def checkable(entries: Sequence[TocEntry], table: TocEntry) -> list[TocEntry]:
    """Entries the target database may already have (ask it; pass the ids it has to
    ``select_table``). Never the table's own (they are dropped and recreated with it)."""
    return [e for e in entries if e.kind in CHECKABLE_KINDS and table.id not in e.deps]


@dataclass(frozen=True)
class Selection:
    entries: list[TocEntry]  # to restore, in the dump's order
    left_out: list[TocEntry]  # the table's own entries that need what is not restored

    def use_list(self) -> bytes:
        return "".join(e.line + "\n" for e in self.entries).encode()


class _Graph:
    def __init__(self, entries: Sequence[TocEntry], present: set[int]) -> None:
        self.by_id = {e.id: e for e in entries}
        self.present = present  # in the target already: not restored

    def needs(self, start: int) -> set[int]:
        """``start`` and everything it depends on, minus what the target has."""
        seen: set[int] = set()
        stack = [start]
        while stack:
            i = stack.pop()
            if i in seen or i in self.present or i not in self.by_id:
                continue
            seen.add(i)
            stack.extend(self.by_id[i].deps)
        return seen

    def table_of(self, e: TocEntry) -> int | None:
        """The relation a constraint, trigger or policy is on: pg_dump names it "TABLE
        NAME" and lists dependencies by id, not the table first."""
        on = [self.by_id[d] for d in e.deps if d in self.by_id]
        tables = [
            t
            for t in on
            if t.kind in RELATION_KINDS and t.schema == e.schema and e.name.startswith(t.name + " ")
        ]
        return max(tables, key=lambda t: len(t.name)).id if tables else None


def select_table(entries: Sequence[TocEntry], table: TocEntry, present: Iterable[int]) -> Selection:
    """The entries that restore ``table`` with what it needs and what belongs to it."""
    graph = _Graph(entries, set(present))
    chosen = graph.needs(table.id)
    own = {table.id}
    left: dict[int, TocEntry] = {}
    changed = True
    while changed:
        changed = False
        for e in entries:
            if e.id in chosen or e.id in left or not any(d in chosen for d in e.deps):
                continue
            belongs = any(d in own for d in e.deps)
            if not (e.kind in OWN_KINDS and belongs) and e.kind not in DECORATION_KINDS:
                continue
            extra = graph.needs(e.id) - chosen
            foreign = [
                x
                for x in extra - {e.id}
                if graph.by_id[x].kind in RELATION_KINDS or graph.by_id[x].kind in DATA_KINDS
            ]
            if foreign:
                if graph.table_of(e) in own:  # its own constraint, needing another table
                    left[e.id] = e
                continue
            chosen |= extra
            if belongs:
                own.add(e.id)
            changed = True
    picked = [e for e in entries if e.id in chosen or e.kind in SESSION_KINDS]
    return Selection(picked, [e for e in entries if e.id in left])
