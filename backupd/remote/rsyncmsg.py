"""What rsync says, read back exactly: its error lines and its itemized file lists.

rsync prints a file name with every byte it deems unprintable (control characters, and
bytes >= 0x80 unless ``--8-bit-output``) as ``\\#ooo`` (octal), and a backslash that would
read as such an escape as ``\\#134``: ``unescape`` gives the raw bytes back. Newlines in
names are escaped too, so one message is one line.

The sender's messages about a path it may not read (errno 13, EACCES; the text before
``(13)`` is the droplet's strerror, in its locale) look like::

    rsync: [sender] send_files failed to open "/srv/t/secret": Permission denied (13)
    rsync: [sender] opendir "/srv/t/private" failed: Permission denied (13)
    rsync: [sender] link_stat "/srv/t/dir/file" failed: Permission denied (13)
    rsync: [sender] readlink_stat("/srv/t/dir/file") failed: Permission denied (13)
    rsync: [sender] change_dir "/srv/t" failed: Permission denied (13)

The name is everything between the first quote after the operation and the last quote of
the line (names may hold quotes; the strerror text holds none).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_ESCAPE = re.compile(rb"\\#([0-7]{3})")
_DENIED = re.compile(
    rb"^rsync: (?:\[sender\] )?(?P<op>send_files failed to open|opendir|link_stat|"
    rb'readlink_stat\(|change_dir(?:#\d)?) ?"(?P<name>.*)"\)?(?: failed)?: [^"]*\(13\)$'
)
_VANISHED = re.compile(rb'^(?:rsync: )?(?:\[sender\] )?file has vanished: "(?P<name>.*)"$')
_SUMMARY = re.compile(rb"^rsync (?:error|warning): some files(?:/attrs)? (?:were not|vanished)")
_DIR_OPS = (b"opendir", b"change_dir")


def unescape(text: bytes) -> bytes:
    r"""rsync's ``\#ooo`` escapes back to bytes: ``caf\#351`` -> ``caf\xe9``."""
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 8) & 0xFF]), text)


@dataclass
class SenderErrors:
    """rsync's stderr sorted out. ``denied``: names relative to the tree's root (bytes)
    the login user may not read, with True for a directory; ``root_denied``: the root
    itself; ``unknown``: every other error line, as text (any makes the pull a failure)."""

    denied: dict[bytes, bool] = field(default_factory=dict)
    vanished: list[bytes] = field(default_factory=list)
    root_denied: bool = False
    unknown: list[str] = field(default_factory=list)


def sender_errors(stderr: bytes, root: str) -> SenderErrors:
    """Sort rsync's stderr for a pull of ``root`` (the absolute remote path)."""
    found = SenderErrors()
    for line in stderr.splitlines():
        line = line.rstrip(b"\r")
        if not line.strip() or _SUMMARY.match(line):
            continue
        denied, vanished = _DENIED.match(line), _VANISHED.match(line)
        match = denied or vanished
        rel = relative(unescape(match.group("name")), root) if match else None
        if rel is None or match is None:
            found.unknown.append(line.decode("utf-8", "backslashreplace"))
        elif vanished:
            found.vanished.append(rel)
        elif rel == b"":
            found.root_denied = True
        else:
            found.denied[rel] = match.group("op") in _DIR_OPS
    return found


def relative(path: bytes, root: str) -> bytes | None:
    """``path`` (absolute, on the droplet) below ``root`` as a clean relative name; b"" for
    the root itself; None if outside it or not clean (a remote message naming ``..`` must
    never name a local path)."""
    top = root.rstrip("/").encode()
    if path.rstrip(b"/") == top:
        return b""
    if not path.startswith(top + b"/"):
        return None
    rel = path[len(top) + 1 :].rstrip(b"/")
    parts = rel.split(b"/")
    if any(p in (b"", b".", b"..") for p in parts):
        return None
    return rel


def itemized_files(stdout: bytes) -> list[bytes]:
    """Files in an ``--itemize-changes`` listing that rsync would send (``>f``/``<f``):
    their names as raw bytes."""
    return [
        unescape(line.split(b" ", 1)[-1])
        for line in stdout.splitlines()
        if line[:2] in (b">f", b"<f")
    ]
