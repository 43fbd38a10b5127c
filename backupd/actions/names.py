"""File names are bytes: one lossless JSON form, one readable form for people.

A Linux file name is any bytes but ``/`` and NUL; it need not be UTF-8 (``caf\\xe9.txt``
written by a Latin-1 program). Python hands such a name out as a str with lone surrogates
(``os.fsdecode``), which cannot be encoded as UTF-8 and which PostgreSQL's JSON refuses.

JSON form (manifests, facts, archive comments, ``--json``): the name as a plain string
when it is valid UTF-8, else ``{"b64": "<base64 of the raw bytes>"}``. A string and an
object never collide, so the form is unambiguous, and old manifests (plain strings) read
back unchanged.

Display form (messages, log lines, alerts): printable characters as they are, a backslash
doubled, and anything else escaped: ``\\n``, ``\\t``, ``\\r``, ``\\xNN`` for a byte that is
not UTF-8, ``\\uNNNN`` for any other unprintable character. Distinct names display
differently (the form is injective), and a name that looks like an escape shows its
backslash doubled: ``caf\\\\xe9.txt``.
"""

from __future__ import annotations

import base64
import binascii

JsonName = str | dict[str, str]
_SHORT = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}


def to_json(name: bytes) -> JsonName:
    """The JSON form of a name (or symlink target): a str, or {"b64": ...}."""
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(name).decode("ascii")}


def from_json(value: object) -> bytes:
    """The raw bytes of a JSON-form name; raises ValueError for anything else.

    A str holding lone surrogates (Python's ``os.fsdecode`` of a non-UTF-8 name, as a
    hand-written manifest might have) is taken back to its bytes as well.
    """
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error as e:
            raise ValueError(f"not base64: {value['b64']!r}") from e
    raise ValueError(f"not a file name: {value!r}")


def display(name: bytes | str) -> str:
    """A name for people, one line, valid UTF-8: ``caf\\xe9.txt``, ``two\\nlines``."""
    text = name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name
    return "".join(_char(c) for c in text)


def _char(c: str) -> str:
    if c in _SHORT:
        return _SHORT[c]
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if c.isprintable():
        return c
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


_UNSHORT = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
_WIDTH = {"x": 2, "u": 4, "U": 8}


def from_display(shown: str) -> bytes:
    """The name's bytes again from its display form (the form is injective; the catalogue's
    index of file versions keeps names this way). ValueError for a broken escape."""
    out: list[str] = []
    i = 0
    while i < len(shown):
        c = shown[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        kind = shown[i + 1 : i + 2]
        if kind in _UNSHORT:
            out.append(_UNSHORT[kind])
            i += 2
            continue
        width = _WIDTH.get(kind)
        digits = shown[i + 2 : i + 2 + width] if width else ""
        if not width or len(digits) != width or not all(d in "0123456789abcdef" for d in digits):
            raise ValueError(f"not a displayed name: {shown!r}")
        code = int(digits, 16)
        out.append(chr(0xDC00 + code) if kind == "x" else chr(code))
        i += 2 + width
    return "".join(out).encode("utf-8", "surrogateescape")
