"""Keep one table of a mariadb-dump/mysqldump SQL stream (``restore --table``).

A dump is a header (session settings), one section per table or view, each opened by a
comment line (``-- Table structure for table `t```, ``-- Dumping data for table `t```,
the view and routine/event headings), and a footer that restores the settings. The
filter passes the header, the footer and the sections of the one table (its structure,
rows and triggers), streaming, line by line.
"""

from __future__ import annotations

import re

_SECTION = re.compile(
    rb"^-- (Table structure for table|Dumping data for table|Temporary table structure for "
    rb"view|Final view structure for view) `(.*)`\s*$"
)
_OTHER_SECTION = re.compile(rb"^-- Dumping (events|routines) for database ")
_FOOTER = b"/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */"
_TABLE_SECTIONS = (b"Table structure for table", b"Dumping data for table")


class OneTableFilter:
    def __init__(self, table: str) -> None:
        self._table = table.encode()
        self._keep = True  # the header is kept
        self._partial = b""
        self.matched = False  # the table's section was seen

    def feed(self, chunk: bytes) -> bytes:
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        return b"".join(self._line(line + b"\n") for line in lines)

    def end(self) -> bytes:
        rest, self._partial = self._partial, b""
        return self._line(rest) if rest else b""

    def _line(self, line: bytes) -> bytes:
        if line.startswith(b"-- "):
            section = _SECTION.match(line.rstrip(b"\n"))
            if section:
                name = section.group(2).replace(b"``", b"`")
                self._keep = section.group(1) in _TABLE_SECTIONS and name == self._table
                self.matched = self.matched or self._keep
            elif _OTHER_SECTION.match(line):
                self._keep = False
        elif line.startswith(_FOOTER):
            self._keep = True
        return line if self._keep else b""
