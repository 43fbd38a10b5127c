"""Make a mariadb-dump stream load somewhere else: under another database name, and on a
server that lacks the accounts its objects were defined by (docs/decisions/0017).

Two rewrites, never inside the rows (INSERT statements pass untouched):

- **Definers.** ``DEFINER=`u`@`h``` of a view, trigger, routine or event whose account
  the target lacks, or that the restoring login may not name, becomes
  ``DEFINER=CURRENT_USER``: the object loads, and works, as the restoring login (what
  ``pg_restore --no-owner`` does for owners). A definer that exists there is kept.
- **The database's own name.** A view whose definer was dropped is dumped with every
  column qualified (`` `shop`.`t`.`id` ``), and trigger and routine bodies may name their
  database (``INSERT INTO shop.audit``). Restored under another name these would point at
  the old database, or nowhere. A three-part name whose first part is the old database is
  renamed; a two-part ``db.x`` too, unless ``db`` is also a table of the dump (then
  ``db.x`` is that table's column, as in `` `v2`.`id` `` of a view over table v2). An
  alias spelled like the database is taken for the database: the one known limit.

The stream is cut into units: a line, or several lines while a quoted string or name is
open at a line's end (a name may hold a newline). Comment lines pass as they are.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Collection

Account = tuple[str, str | None]  # (user, host); host None: a role

_QUOTED = rb"`(?:[^`]|``)*`"
_BARE = rb"[A-Za-z0-9_$\x80-\xff]+"
_NAME = rb"(?:" + _QUOTED + rb"|" + _BARE + rb")"
_TOKENS = re.compile(
    rb"(?P<skip>'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\"|(?:--[ \t]|#)[^\n]*)"
    rb"|(?P<definer>(?:\bCREATE\s+|/\*!\d{5}\s+)DEFINER\s*=\s*)"
    rb"(?P<user>" + _QUOTED + rb")(?:@(?P<host>" + _QUOTED + rb"))?"
    rb"|(?P<chain>" + _NAME + rb"(?:\." + _NAME + rb"){1,2})"
    rb"|" + _NAME,
    re.S,
)
_PARTS = re.compile(_NAME)
# a quote left open at the end of a unit: complete tokens match first, a lone quote after
_OPEN = re.compile(
    rb"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\"|" + _QUOTED + rb"|(?:--[ \t]|#)[^\n]*|['\"`]"
)
_PLAIN_DB = re.compile(rb"[A-Za-z_$\x80-\xff][A-Za-z0-9_$\x80-\xff]*")
MAX_UNIT = 4 << 20  # a quote that never closes (not SQL we understand): passed on as it is


def quote_name(name: str) -> bytes:
    return b"`" + name.encode().replace(b"`", b"``") + b"`"


def _unquote(part: bytes) -> str:
    return part[1:-1].replace(b"``", b"`").decode("utf-8", "replace")


def _open(unit: bytes) -> bool:
    return any(len(m.group(0)) == 1 and m.group(0) in b"'\"`" for m in _OPEN.finditer(unit))


class PortableLoad:
    """Rewrites a mariadb-dump stream of database ``old`` so it loads as ``new`` on a
    server where ``keep(user, host)`` says which definers may stay. ``tables``: the
    dump's tables (the recorded facts), to tell ``table.column`` from ``db.table``."""

    def __init__(
        self,
        old: str,
        new: str,
        tables: Collection[str],
        keep: Callable[[str, str | None], bool],
    ) -> None:
        self._old = old.encode()
        self._new = quote_name(new)
        self._rename = old != new
        self._plain = _PLAIN_DB.fullmatch(self._old) is not None
        self._two_part = old not in tables
        self._needles = [quote_name(old) + b"."] + ([self._old + b"."] if self._plain else [])
        self._keep = keep
        self._partial = b""
        self._pending = b""  # a unit with a quote still open
        self._rows = False  # inside an INSERT statement: rows, never rewritten
        self._last = b""  # the last byte of rows passed on (what precedes a line's end)
        self._in_block = False  # between DELIMITER ;; and DELIMITER ; (bodies, no rows)
        self.replaced: Counter[str] = Counter()  # definer shown as u@h -> objects loaded
        self.renamed = 0

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        pos = 0
        while pos < len(chunk):
            if self._rows:  # bytes of an INSERT pass on as they come: a row may be huge
                nl = chunk.find(b"\n", pos)
                if nl < 0:
                    out.append(chunk[pos:])
                    self._last = chunk[-1:]
                    break
                before = chunk[nl - 1 : nl] if nl > pos else self._last
                out.append(chunk[pos : nl + 1])
                self._rows = before != b";"  # a statement's last row ends with ";"
                self._last, pos = b"\n", nl + 1
                continue
            nl = chunk.find(b"\n", pos)
            end = len(chunk) if nl < 0 else nl + 1
            self._partial += chunk[pos:end]
            pos = end
            if nl >= 0:
                line, self._partial = self._partial, b""
                out.append(self._line(line))
            elif self._starts_rows(self._partial):
                out.append(self._partial)
                self._rows, self._last, self._partial = True, self._partial[-1:], b""
        return b"".join(out)

    def end(self) -> bytes:
        rest = self._line(self._partial) if self._partial else b""
        self._partial = b""
        unit, self._pending = self._pending, b""
        return rest + (self._rewrite(unit) if unit else b"")

    def notes(self) -> list[str]:
        """What was changed, one line each, for the restore's checks."""
        said = []
        if self.replaced:
            who = ", ".join(sorted(self.replaced))
            said.append(
                f"{sum(self.replaced.values())} object(s) defined by {who} (no such "
                "account here, or not one this login may name) loaded with the "
                "restoring login as definer"
            )
        if self.renamed:
            said.append(
                f"{self.renamed} reference(s) to database {self._old.decode()!r} "
                f"renamed to {_unquote(self._new)!r}"
            )
        return said

    def _line(self, line: bytes) -> bytes:
        if self._pending:
            self._pending += line
            if _open(self._pending) and len(self._pending) < MAX_UNIT:
                return b""
            unit, self._pending = self._pending, b""
            return self._rewrite(unit)
        bare = line.rstrip(b"\r\n")
        if bare in (b"DELIMITER ;;", b"DELIMITER ;"):
            self._in_block = bare == b"DELIMITER ;;"
            return line
        if self._starts_rows(line):
            self._rows = not bare.endswith(b";")
            return line
        if line.startswith(b"-- ") or bare == b"--":
            return line  # the dump's comments: names in them are not quoted
        if _open(line):
            self._pending = line
            return b""
        return self._rewrite(line)

    def _starts_rows(self, line: bytes) -> bool:
        """An INSERT statement begins (never inside a routine or trigger body)."""
        return not self._pending and not self._in_block and line.startswith(b"INSERT INTO ")

    def _rewrite(self, unit: bytes) -> bytes:
        if b"DEFINER" not in unit and not (self._rename and any(n in unit for n in self._needles)):
            return unit
        return _TOKENS.sub(self._token, unit)

    def _token(self, m: re.Match[bytes]) -> bytes:
        if m.group("definer"):
            user = _unquote(m.group("user"))
            host = _unquote(m.group("host")) if m.group("host") else None
            if self._keep(user, host):
                return m.group(0)
            self.replaced[user if host is None else f"{user}@{host}"] += 1
            return m.group("definer") + b"CURRENT_USER"
        chain = m.group("chain")
        if chain and self._rename:
            parts = _PARTS.findall(chain)
            if self._is_old(parts[0]) and (len(parts) == 3 or self._two_part):
                self.renamed += 1
                return self._new + chain[len(parts[0]) :]
        return m.group(0)

    def _is_old(self, part: bytes) -> bool:
        if part.startswith(b"`"):
            return part[1:-1].replace(b"``", b"`") == self._old
        return self._plain and part == self._old
