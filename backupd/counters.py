"""Facts counted from a dump stream as it passes through the relay.

``sql-inserts`` counts rows per table in mariadb-dump/mysqldump output: each extended
INSERT is one line (the dump escapes newlines inside strings); string literals are
removed with one C-speed regex before the row separators ``),(`` are counted, so a
string containing "),(" cannot skew the count.
"""

from __future__ import annotations

import re
from typing import Protocol

_STRING = re.compile(rb"'(?:[^'\\]|\\.)*'", re.DOTALL)
_INSERT = b"INSERT INTO `"
_CREATE = b"CREATE TABLE `"
_VALUES = b"` VALUES"


class Counter(Protocol):
    def feed(self, chunk: bytes) -> None: ...

    def facts(self) -> dict[str, object]: ...


class SqlInsertCounter:
    """Rows per table, for both layouts mariadb-dump writes: a whole extended INSERT on
    one line (MySQL, older MariaDB) or ``INSERT INTO `t` VALUES`` followed by one tuple
    per line (MariaDB 10.11+)."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self._partial = b""
        self._table: str | None = None  # inside a multi-line INSERT for this table

    def feed(self, chunk: bytes) -> None:
        if b"\n" not in chunk:
            self._partial += chunk
            return
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line)

    def _line(self, line: bytes) -> None:
        if self._table is not None:
            self._add(self._table, line)
            if line.endswith(b";"):
                self._table = None
        elif line.startswith(_INSERT):
            end = line.find(_VALUES, len(_INSERT))
            if end < 0:
                return
            table = _name(line[len(_INSERT) : end])
            self.rows.setdefault(table, 0)
            rest = line[end + len(_VALUES) :].strip()
            if rest:
                self._add(table, rest)
            else:
                self._table = table
        elif line.startswith(_CREATE):
            end = line.find(b"`", len(_CREATE))
            while end >= 0 and line[end : end + 2] == b"``":
                end = line.find(b"`", end + 2)
            if end > 0:
                self.rows.setdefault(_name(line[len(_CREATE) : end]), 0)

    def _add(self, table: str, values: bytes) -> None:
        body = _STRING.sub(b"''", values).strip()
        if body.startswith(b"("):
            self.rows[table] += body.count(b"),(") + 1

    def facts(self) -> dict[str, object]:
        if self._partial:
            self._line(self._partial)
            self._partial = b""
        return {"rows": dict(sorted(self.rows.items()))}


def _name(raw: bytes) -> str:
    return raw.replace(b"``", b"`").decode("utf-8", "replace")


COUNTERS: dict[str, type[SqlInsertCounter]] = {"sql-inserts": SqlInsertCounter}


def make_counter(name: str | None) -> Counter | None:
    return COUNTERS[name]() if name else None


def parse_fact_lines(lines: list[str]) -> dict[str, object]:
    """Facts a remote script printed on stderr: ``backupd-fact rows N TABLE`` and
    ``backupd-fact KEY VALUE``."""
    facts: dict[str, object] = {}
    rows: dict[str, int] = {}
    for line in lines:
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[1] == "rows" and parts[2].isdigit():
            rows[parts[3]] = int(parts[2])
        elif len(parts) >= 3:
            value = " ".join(parts[2:])
            facts[parts[1]] = int(value) if value.isdigit() else value
    if rows:
        facts["rows"] = dict(sorted(rows.items()))
    return facts
