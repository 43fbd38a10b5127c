"""Channel-level helpers of the remote seam: pumping stdout, draining stderr (with fact
lines), stopping a remote command with SSH "signal" requests, interactive sessions."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paramiko
from paramiko.common import cMSG_CHANNEL_REQUEST

from backupd.errors import STDERR_TAIL_BYTES, RemoteError, tail_text
from backupd.local.process import FeedResult, InputRefused, Produce

READ_SIZE = 1024 * 1024
TERMINATE_WAIT = 5.0


class Interactive:
    """A remote command we talk to line by line: send input, read up to a marker."""

    def __init__(self, label: str, name: str, chan: paramiko.Channel) -> None:
        self.label, self.name, self._chan = label, name, chan
        self._buf = b""

    def send(self, text: str) -> None:
        try:
            self._chan.sendall(text.encode())
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise self._failed(f"input refused: {e}") from None

    def read_until(self, marker: bytes, timeout: float) -> bytes:
        """Everything up to (not including) the first line that is exactly ``marker``."""
        end = time.monotonic() + timeout
        needle = b"\n" + marker + b"\n"
        while needle not in b"\n" + self._buf:
            if time.monotonic() > end:
                raise self._failed(f"no answer within {timeout:.0f}s")
            try:
                chunk = self._chan.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise self._failed("ended early")
            self._buf += chunk
        before, _, self._buf = (b"\n" + self._buf).partition(needle)
        return before[1:]

    @contextlib.contextmanager
    def pinging(self, every: float, ping: str, marker: bytes) -> Iterator[None]:
        """While the caller waits elsewhere, send ``ping`` every ``every`` seconds and read
        its answer (up to the line ``marker``). A session the droplet's server ends when it
        sits idle (PostgreSQL's idle_in_transaction_session_timeout) so stays alive exactly
        as long as we do: after a lost connection the server gives its snapshot back."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every):
                try:
                    self.send(ping)
                    self.read_until(marker, max(every, 10.0))
                except RemoteError:
                    return  # gone: whoever uses the session next hears why

        thread = threading.Thread(target=loop, name=f"ping {self.label}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _failed(self, what: str) -> RemoteError:
        err = b""
        while self._chan.recv_stderr_ready():
            err += self._chan.recv_stderr(65536)
        tail = tail_text(err)
        transport = self._chan.get_transport()
        if transport is None or not transport.is_active() or transport.saved_exception:
            return RemoteError(
                f"{self.label}: connection lost while {self.name} was running "
                "(no answer from the droplet)",
                stderr_tail=tail,
                transient=True,
            )
        return RemoteError(f"{self.name} {what}", stderr_tail=tail)

    def close(self) -> None:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self._chan.shutdown_write()
            self._chan.status_event.wait(10)
        self._chan.close()


def send_signal(chan: paramiko.Channel, name: str) -> None:
    """RFC 4254 6.9 "signal" request; sshd (OpenSSH >= 8.1) passes it to the command.
    paramiko has no public call for it, so the message is built as its own requests are."""
    m = paramiko.Message()
    m.add_byte(cMSG_CHANNEL_REQUEST)
    m.add_int(chan.remote_chanid)
    m.add_string("signal")
    m.add_boolean(False)
    m.add_string(name)
    transport: Any = chan.transport
    if transport is not None:
        transport._send_user_message(m)


def terminate(chan: paramiko.Channel) -> None:
    """Stop an overrunning remote command: TERM, then KILL; never leave it running."""
    for name in ("TERM", "KILL"):
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            send_signal(chan, name)
        if chan.status_event.wait(TERMINATE_WAIT):
            return


def pump(
    chan: paramiko.Channel,
    on_stdout: Callable[[bytes], None],
    end: float,
    idle: float,
    progress: Callable[[], float] | None = None,
) -> str | None:
    """Copy stdout to on_stdout until EOF; return "deadline"/"idle" if we gave up.
    ``progress``: when the command last reported progress on stderr (a copy phase that
    writes no stdout yet, e.g. SQLite's VACUUM INTO): that counts as activity too."""
    last_data = time.monotonic()
    while True:
        now = time.monotonic()
        if now > end:
            return "deadline"
        active = max(last_data, progress()) if progress is not None else last_data
        if now - active > idle:
            return "idle"
        try:
            chunk = chan.recv(READ_SIZE)
        except TimeoutError:
            continue
        if not chunk:
            return None
        last_data = time.monotonic()
        on_stdout(chunk)


class StderrCollector:
    """Drains the channel's stderr in a thread (so it never stalls stdout), keeping a tail.
    ``from_stdout``: drain stdout instead (a restore tool's chatter, e.g. mariadb's)."""

    MAX_FACT_LINES = 100_000
    PROGRESS = b"backupd-progress "  # "I am still working": resets the idle timer, not kept

    def __init__(
        self, chan: paramiko.Channel, fact_lines: list[str] | None, from_stdout: bool = False
    ) -> None:
        self._chan = chan
        self._recv = chan.recv if from_stdout else chan.recv_stderr
        self._buf = bytearray()
        self._facts = fact_lines
        self._line = bytearray()
        self.last_progress = 0.0  # monotonic time of the last progress line (0: none yet)
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = self._recv(65536)
            except TimeoutError:
                if self._chan.closed:
                    return
                continue
            except (OSError, EOFError):
                return
            if not chunk:
                return
            if self._facts is not None:
                chunk = self._take_facts(chunk)
            self._buf.extend(chunk)
            del self._buf[: max(0, len(self._buf) - 4 * STDERR_TAIL_BYTES)]

    def _take_facts(self, chunk: bytes) -> bytes:
        """Move "backupd-fact ..." lines into the fact list; return the rest for the tail."""
        assert self._facts is not None
        self._line.extend(chunk)
        *complete, rest = bytes(self._line).split(b"\n")
        self._line = bytearray(rest)
        kept = []
        for line in complete:
            if line.startswith(self.PROGRESS):
                self.last_progress = time.monotonic()
            elif line.startswith(b"backupd-fact ") and len(self._facts) < self.MAX_FACT_LINES:
                self._facts.append(line.decode("utf-8", "replace"))
            else:
                kept.append(line + b"\n")
        return b"".join(kept)

    def flush(self) -> None:
        if self._line:
            self._buf.extend(self._line)
            self._line.clear()

    def join(self) -> None:
        self._thread.join(timeout=5)

    @property
    def data(self) -> bytes:
        return bytes(self._buf)


def feed_channel(
    chan: paramiko.Channel, argv: tuple[str, ...], produce: Produce, deadline: float
) -> FeedResult:
    """Feed ``produce``'s chunks to the remote command running on ``chan`` (already
    exec'd, with a short poll timeout set), then wait for its exit status. A command that
    exits early stops the producer; an error or the deadline stops the remote command
    too (never left running)."""
    started = time.monotonic()
    fed = 0
    complete = timed_out = False
    stderr = StderrCollector(chan, None)
    stdout = StderrCollector(chan, None, from_stdout=True)

    def sink(chunk: bytes) -> None:
        nonlocal fed
        if time.monotonic() - started > deadline:
            raise TimeoutError
        data = chunk
        while data:  # send() waits for window space at most the channel's poll timeout
            if chan.exit_status_ready() or chan.closed:
                raise InputRefused
            try:
                sent = chan.send(data)
            except TimeoutError:
                if time.monotonic() - started > deadline:
                    raise
                continue
            except (OSError, EOFError, paramiko.SSHException):
                raise InputRefused from None
            if sent == 0:
                raise InputRefused
            data = data[sent:]
        fed += len(chunk)

    try:
        try:
            produce(sink)
            complete = True
            chan.shutdown_write()
        except InputRefused:
            pass
        except TimeoutError:
            timed_out = True
            terminate(chan)
        except BaseException:
            terminate(chan)
            raise
        left = max(1.0, deadline - (time.monotonic() - started))
        if not chan.status_event.wait(left):
            timed_out = True
            terminate(chan)
        status: int | None = chan.recv_exit_status() if chan.status_event.is_set() else None
    finally:
        chan.close()
        stdout.join()
        stderr.join()
    if status == -1:
        status = None
    output = stdout.data + stderr.data
    return FeedResult(argv, status, output, time.monotonic() - started, fed, complete, timed_out)
