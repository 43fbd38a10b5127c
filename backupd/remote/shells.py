"""Where a restore's database commands run: on the backup host, or on a droplet over SSH.

Both shells take argv, run short commands to completion, feed a stream into a long one
(the restore tool) and hand out a private file for a secret (an option file), so the
restore code and the source kinds do not care which side they are on.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from backupd.errors import RemoteError
from backupd.local.process import (
    CommandResult,
    FeedResult,
    Invocation,
    Produce,
    feed_local,
    run_local,
)

if TYPE_CHECKING:  # paramiko comes with a connection: the daemon's scheduler names only
    from backupd.remote.ssh import Connection  # the protocols (its memory at rest)

SECRET_FILE_TIMEOUT = 60.0


class CommandRunner(Protocol):
    """Runs short commands to completion: on a droplet, or on the backup host."""

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        secrets: Sequence[str] = (),
    ) -> CommandResult: ...


class CommandShell(CommandRunner, Protocol):
    label: str  # for messages: "the backup host", or the droplet's name

    def feed(self, argv: Sequence[str], produce: Produce, *, timeout: float) -> FeedResult: ...

    def private_file(self, content: bytes) -> AbstractContextManager[str]:
        """A file only we can read holding ``content``, removed afterwards; yields its path."""
        ...


class LocalShell:
    label = "the backup host"

    def __init__(self, scratch: Path) -> None:
        self._scratch = scratch  # a private (0700) directory for secret files

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        secrets: Sequence[str] = (),
    ) -> CommandResult:
        inv = Invocation(timeout=timeout, stdin=stdin, secrets=tuple(secrets))
        return run_local(tuple(argv), inv)

    def feed(self, argv: Sequence[str], produce: Produce, *, timeout: float) -> FeedResult:
        return feed_local(tuple(argv), Invocation(timeout=timeout), produce)

    @contextlib.contextmanager
    def private_file(self, content: bytes) -> Iterator[str]:
        fd, path = tempfile.mkstemp(dir=self._scratch, prefix="secret-")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            yield path
        finally:
            Path(path).unlink(missing_ok=True)


class DropletShell:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.label = conn.target.label

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        secrets: Sequence[str] = (),
    ) -> CommandResult:
        return self._conn.run(argv, timeout=timeout, stdin=stdin, secrets=secrets)

    def feed(self, argv: Sequence[str], produce: Produce, *, timeout: float) -> FeedResult:
        from backupd.remote.channel import feed_channel
        from backupd.remote.ssh import POLL_SECONDS, remote_command_line

        chan = self._conn.open_channel(remote_command_line(argv))
        chan.settimeout(POLL_SECONDS)
        return feed_channel(chan, tuple(argv), produce, timeout)

    @contextlib.contextmanager
    def private_file(self, content: bytes) -> Iterator[str]:
        make = ("sh", "-c", 'umask 077 && f=$(mktemp) && cat > "$f" && printf %s "$f"')
        made = self._conn.run(make, timeout=SECRET_FILE_TIMEOUT, stdin=content)
        path = made.stdout.decode().strip()
        if not made.ok or not path.startswith("/"):
            raise RemoteError(
                f"{self.label}: cannot create a private temporary file",
                stderr_tail=made.stderr_tail(),
            )
        try:
            yield path
        finally:
            self._conn.run(("rm", "-f", "--", path), timeout=SECRET_FILE_TIMEOUT)
