"""A gated ``borg create``: a stream fed by backupd, kept only on backupd's word.

Piping a dump into ``borg create -`` would keep a cut dump as a normal-looking archive
(decision 0001). ``--content-from-command`` closes that hole but costs a process of ours
for every archive (and its own SSH connection). The gate keeps the guarantee with one
borg process and nothing else of ours (decision 0019):

- borg's stdin is a pipe backupd writes the stream into; the spool directory holds
  ``FILENAME`` as a symlink to ``/dev/stdin``, which ``--read-special`` reads as a file;
- ``--paths-from-command`` runs a few lines of ``sh`` (GATE_SCRIPT) that mark the spool
  ``started`` (borg holds its lock: the stream may begin), name ``FILENAME``, then wait on
  the ``verdict`` FIFO, and only on ``ok`` name the seal file and exit 0. On anything
  else the command exits 1 and borg commits nothing ("Command Error", no archive);
- backupd dying at any point ends borg too, and borg the gate (``setpriv --pdeathsig``);
  an uncommitted archive is no archive.

The seal (sha256, size, facts of the stream, JSON) is written before the verdict and
travels inside the archive as SEAL_NAME: no rewrite of the archive after the fact.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from backupd.local.process import dies_with_us

SEAL_NAME = ".backupd-seal.json"
# borg 1.4 reads the paths command's output 4096 characters at a time and acts on a path
# only once its read returns: the stream's path is padded to exactly that line length
# ("./" segments, which borg normalises away), so borg starts reading the stream while the
# gate still waits for the verdict. Pinned with borgbackup==1.4.5 (pyproject.toml).
PATHS_READ_SIZE = 4096
# $1 FILENAME  $2 SEAL_NAME  $3 verdict FIFO  $4 started marker
GATE_SCRIPT = (
    ': > "$4" || exit 1\n'
    "printf '%s\\n' \"$1\" || exit 1\n"
    'IFS= read -r verdict < "$3"\n'
    '[ "$verdict" = ok ] || exit 1\n'
    "printf '%s\\n' \"$2\"\n"
)


class Gate:
    """The spool directory of one gated create (private, removed by ``close``)."""

    def __init__(self, spool: Path, filename: str) -> None:
        if not filename or "/" in filename or "\n" in filename or filename in (".", ".."):
            raise ValueError(f"not a plain file name: {filename!r}")
        if filename == SEAL_NAME:
            raise ValueError(f"{filename!r} is the seal's name")
        self.spool, self.filename = spool, filename
        self.path = padded(filename)  # refused before anything is made
        shutil.rmtree(spool, ignore_errors=True)  # a killed backupd's, of the same name
        spool.mkdir(mode=0o700)
        (spool / filename).symlink_to("/dev/stdin")
        os.mkfifo(self.verdict_path, 0o600)
        self._fd: int | None = None

    @property
    def verdict_path(self) -> Path:
        return self.spool / "verdict"

    @property
    def started_path(self) -> Path:
        return self.spool / "started"

    def command(self) -> tuple[str, ...]:
        """The ``--paths-from-command`` argv (run by borg in the spool directory). It
        ends with borg (``setpriv --pdeathsig``): a gate whose borg was killed would
        otherwise wait on its FIFO for ever."""
        return tuple(
            dies_with_us(
                (
                    "sh",
                    "-c",
                    GATE_SCRIPT,
                    "backupd-gate",
                    self.path,
                    SEAL_NAME,
                    str(self.verdict_path),
                    str(self.started_path),
                )
            )
        )

    def started(self) -> bool:
        """borg has its lock and its cache and asks for the stream."""
        return self.started_path.exists()

    def allow(self, seal: bytes) -> None:
        """Keep the archive, with ``seal`` inside it."""
        fd = os.open(self.spool / SEAL_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(seal)
        self._say(b"ok\n")

    def refuse(self) -> None:
        """Commit nothing (a second verdict is ignored: the first one stands)."""
        self._say(b"no\n")

    def _say(self, verdict: bytes) -> None:
        # O_RDWR: never blocks, whether or not the gate already waits in open(); the fd is
        # kept until ``close`` so the line stays in the FIFO until the gate has read it
        if self._fd is not None:
            return
        self._fd = os.open(self.verdict_path, os.O_RDWR)
        os.write(self._fd, verdict)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        for entry in (self.filename, SEAL_NAME, "verdict", "started"):
            with contextlib.suppress(FileNotFoundError):
                (self.spool / entry).unlink()
        with contextlib.suppress(OSError):
            self.spool.rmdir()


def padded(filename: str) -> str:
    """``filename`` as a relative path of PATHS_READ_SIZE - 1 characters (the newline
    makes the line exactly one read): ``./`` segments, with ``.//`` first when the count
    is odd; ``os.path.normpath`` gives back ``filename``."""
    room = PATHS_READ_SIZE - 1 - len(filename)
    if room < 2:
        raise ValueError(f"file name too long for the gate: {filename[:40]!r}...")
    head = ".//" if room % 2 else ""
    return head + "./" * ((room - len(head)) // 2) + filename
