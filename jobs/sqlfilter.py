"""Keep one table of a mariadb-dump/mysqldump SQL stream (``restore --table``).

A dump is a header (session settings), one section per table or view, each opened by a
comment line (``-- Table structure for table `t```, ``-- Dumping data for table `t```,
the view and routine/event headings), and a footer that restores the settings. The
filter passes the header, the footer and the sections of the one table (its structure,
rows and triggers), streaming, line by line. A name holding a newline continues its
heading on the next comment line (``-- `` then the rest of the name).
"""

from __future__ import annotations

import re

_SECTION = re.compile(
    rb"^-- (Table structure for table|Dumping data for table|Temporary table structure for "
    rb"view|Final view structure for view) `(.*)$",
    re.S,
)
_OTHER_SECTION = re.compile(rb"^-- Dumping (events|routines) for database ")
_FOOTER = b"/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */"
_TABLE_SECTIONS = (b"Table structure for table", b"Dumping data for table")
_CLOSED = re.compile(rb"^((?:[^`]|``)*)`\s*$", re.S)  # the rest of a quoted name, closed


class OneTableFilter:
    def __init__(self, table: str) -> None:
        self._table = table.encode()
        self._keep = True  # the header is kept
        self._partial = b""
        self._heading: list[bytes] = []  # a section heading whose name is still open
        self.matched = False  # the table's section was seen

    def feed(self, chunk: bytes) -> bytes:
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        return b"".join(self._line(line + b"\n") for line in lines)

    def end(self) -> bytes:
        rest, self._partial = self._partial, b""
        out = self._line(rest) if rest else b""
        if self._heading:  # a heading that never closed: not a section we know
            lines, self._heading = self._heading, []
            out += b"".join(lines) if self._keep else b""
        return out

    def _line(self, line: bytes) -> bytes:
        if self._heading:
            return self._continue_heading(line)
        if line.startswith(b"-- "):
            section = _SECTION.match(line.rstrip(b"\n"))
            if section:
                self._heading = [line]
                return self._heading_done(section.group(1), section.group(2))
            if _OTHER_SECTION.match(line):
                self._keep = False
        elif line.startswith(_FOOTER):
            self._keep = True
        return line if self._keep else b""

    def _continue_heading(self, line: bytes) -> bytes:
        if not line.startswith(b"-- "):  # not a continuation after all: pass it on as is
            lines, self._heading = self._heading, []
            held = b"".join(lines) if self._keep else b""
            return held + self._line(line)
        self._heading.append(line)
        first = _SECTION.match(self._heading[0].rstrip(b"\n"))
        assert first is not None
        name = b"\n".join([first.group(2)] + [h.rstrip(b"\n")[3:] for h in self._heading[1:]])
        return self._heading_done(first.group(1), name)

    def _heading_done(self, kind: bytes, rest: bytes) -> bytes:
        closed = _CLOSED.match(rest)
        if closed is None:
            return b""  # the name goes on in the next comment line
        lines, self._heading = self._heading, []
        name = closed.group(1).replace(b"``", b"`")
        self._keep = kind in _TABLE_SECTIONS and name == self._table
        self.matched = self.matched or self._keep
        return b"".join(lines) if self._keep else b""
