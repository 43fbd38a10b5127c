"""Facts about a dump: counted from its stream as it passes through backupd (a
``Counter`` a kind names in ``DumpStream.counter``), or printed by the remote command
on its stderr as ``backupd-fact`` lines.

No kind counts rows from the dump's text any more: parsing SQL text miscounted every
INSERT form it did not expect (docs/decisions/0017); rows are counted by the server.
"""

from __future__ import annotations

from typing import Protocol


class Counter(Protocol):
    def feed(self, chunk: bytes) -> None: ...

    def facts(self) -> dict[str, object]: ...


# stream counters a kind may ask for on its stream, by name (none today)
COUNTERS: dict[str, type[Counter]] = {}


def make_counter(name: str | None) -> Counter | None:
    return COUNTERS[name]() if name else None


def parse_fact_lines(lines: list[str]) -> dict[str, object]:
    """Facts a remote script printed on stderr, one per line:

    - ``backupd-fact rows N TABLE``: rows in a table (the name to the end of the line);
    - ``backupd-fact rows-hex N HEX``: the same, the name hex-encoded UTF-8 (any name,
      a newline too);
    - ``backupd-fact rows-outside-hex N HEX``: a table whose rows are not in the dump's
      snapshot (an engine without transactions): also listed in ``rows_outside_snapshot``;
    - ``backupd-fact warning TEXT``: something a person should look at (``warnings``);
    - ``backupd-fact KEY VALUE``: anything else (an int when VALUE is digits).
    """
    facts: dict[str, object] = {}
    rows: dict[str, int] = {}
    outside: list[str] = []
    warnings: list[str] = []
    for line in lines:
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[1] == "rows" and parts[2].isdigit():
            rows[parts[3]] = int(parts[2])
        elif len(parts) == 4 and parts[1] in _HEX_ROWS and parts[2].isdigit():
            name = _unhex(parts[3])
            if name is not None:
                rows[name] = int(parts[2])
                if parts[1] == "rows-outside-hex":
                    outside.append(name)
        elif len(parts) >= 3 and parts[1] == "warning":
            warnings.append(line.split(" ", 2)[2])
        elif len(parts) >= 3:
            value = " ".join(parts[2:])
            facts[parts[1]] = int(value) if value.isdigit() else value
    if rows:
        facts["rows"] = dict(sorted(rows.items()))
    if outside:
        facts["rows_outside_snapshot"] = sorted(outside)
    if warnings:
        facts["warnings"] = warnings
    return facts


_HEX_ROWS = ("rows-hex", "rows-outside-hex")


def _unhex(text: str) -> str | None:
    try:
        return bytes.fromhex(text.strip()).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
