"""The one seam through which backupd runs commands on droplets (paramiko).

Commands are argv tuples, quoted with ``shlex.join`` for the remote shell: nothing a
config or a user typed is ever interpreted as shell syntax. The host key is checked
against the pinned key before authentication: an unknown or changed key is refused.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

import paramiko

from backupd.errors import HostKeyError, RemoteError, tail_text
from backupd.local.process import CommandResult, mask_argv
from backupd.remote.channel import Interactive, StderrCollector, pump, terminate
from backupd.remote.hostkeys import (
    SSHTarget,
    fingerprint,
    fingerprint_line,
    key_matches,
    pin_file,
    pinned_keys,
    refusal,
)

log = logging.getLogger(__name__)
# re-exported: callers reach the SSH seam through this module
__all__ = [
    "Connection",
    "SSHTarget",
    "StreamResult",
    "fingerprint",
    "fingerprint_line",
    "key_matches",
    "offered_host_key",
    "pin_file",
    "pinned_keys",
    "refusal",
    "remote_command_line",
]

# Measured on this hardware (docs/benchmarks.md): AES-GCM with 1 MiB reads is the
# fastest paramiko combination, a larger window was slower.
PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
MAX_PACKET = 256 * 1024 - 1024  # what sshd may send us in one packet (it caps at 256 KiB)
POLL_SECONDS = 1.0
EXIT_STATUS_WAIT = 30.0
RUN_OUTPUT_LIMIT = 64 * 1024 * 1024
# paramiko ignores the "exit-signal" message, so a dump killed on the droplet would look
# like a lost connection. This constant wrapper runs the command as its child, reports a
# killing signal on stderr, and passes on a TERM/HUP/INT that backupd sends (SSH "signal"
# request) when a command overruns its deadline. The real argv arrives as quoted
# positional parameters, never interpolated into the script.
WRAP_SCRIPT = (
    # dash gives a background job /dev/null as stdin even with "<&0": go through fd 3
    'exec 3<&0; "$@" <&3 3<&- & c=$!; exec 3<&-; '
    "trap 'kill -TERM \"$c\" 2>/dev/null' TERM HUP INT; "
    'wait "$c"; s=$?; '
    'while kill -0 "$c" 2>/dev/null; do wait "$c"; s=$?; done; '
    'if [ "$s" -gt 128 ]; then echo "backupd: $1 killed by signal $((s - 128))" >&2; fi; '
    'exit "$s"'
)
_WRAPPER = f"sh -c {shlex.quote(WRAP_SCRIPT)} backupd-wrap "


def remote_command_line(argv: Sequence[str]) -> str:
    """The string sent to the droplet's shell for argv: quoted, wrapped, never interpolated."""
    if not argv:
        raise ValueError("empty remote command")
    return _WRAPPER + shlex.join(argv)


@dataclass(frozen=True)
class StreamResult:
    argv: tuple[str, ...]
    exit_status: int | None
    nbytes: int
    sha256: str
    stderr_tail: str
    seconds: float
    timed_out: str | None = None
    fact_lines: tuple[str, ...] = ()  # "backupd-fact ..." lines the command printed on stderr
    lost_why: str = ""  # timed_out "lost": why (Connection.why_lost)

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and self.timed_out is None


class Connection:
    """One SSH connection to one droplet; use as a context manager."""

    def __init__(self, target: SSHTarget) -> None:
        self.target = target
        self._transport: paramiko.Transport | None = None
        self.last_heard = 0.0  # monotonic: the last stdout bytes a command sent us

    def __enter__(self) -> Connection:
        self.open()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- connecting ---------------------------------------------------------------
    def open(self) -> None:
        t = self.target
        pinned = pinned_keys(t)
        transport = _handshake(t, pinned)
        self._transport = transport
        self._check_host_key(transport.get_remote_server_key(), pinned)
        self._authenticate(transport, t.where)
        # an SSH keepalive puts bytes on the wire while a command is silent (a snapshot
        # held, a dump that waits): on a dead link they go unacknowledged, and
        # TCP_USER_TIMEOUT (set in _handshake) ends the connection within the timeout
        transport.set_keepalive(max(1, int(t.dead_peer_timeout / 3)))

    def _check_host_key(self, key: paramiko.PKey, pinned: Sequence[str]) -> None:
        if key_matches(key, pinned):
            return
        self.close()
        raise HostKeyError(refusal(self.target, key, pinned))

    def _authenticate(self, transport: paramiko.Transport, where: str) -> None:
        t = self.target
        try:
            pkey = paramiko.PKey.from_path(t.key_path)
        except (OSError, paramiko.SSHException, ValueError) as e:
            self.close()
            raise RemoteError(f"{where}: cannot load SSH key {t.key_path}: {e}") from None
        try:
            transport.auth_publickey(t.user, pkey)
        except paramiko.AuthenticationException:
            self.close()
            raise RemoteError(f"{where}: login as {t.user!r} with {t.key_path} refused") from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.close()
            raise RemoteError(f"{where}: login failed: {e}", transient=True) from None

    def alive(self) -> bool:
        """Whether the connection still stands (False after the droplet stopped answering)."""
        t = self._transport
        # saved_exception is set before paramiko closes the channels (then is_active() turns
        # False): a channel's early end can be told from a dead connection without a race
        return t is not None and t.is_active() and t.saved_exception is None

    def why_lost(self, silent_for: float) -> str:
        """Why the connection ended under us, given how long the droplet had been silent:
        it stopped answering (the keepalives went unacknowledged for dead_peer_timeout: a
        cut link, a dead droplet), or its side closed the connection. paramiko reports both
        as EOFError, so the silence tells them apart."""
        limit = self.target.dead_peer_timeout
        if silent_for >= 0.8 * limit:
            return f"no answer for {limit:.0f}s (link cut or droplet down)"
        return "closed from the droplet's side"

    def _exit_status(self, chan: paramiko.Channel) -> int | None:
        """The command's exit status, waiting a little for it after EOF; None if the
        connection went away first (then there is nothing to wait for)."""
        end = time.monotonic() + EXIT_STATUS_WAIT
        while not chan.status_event.wait(POLL_SECONDS):
            if not self.alive() or time.monotonic() > end:
                return None
        status = chan.recv_exit_status()
        return None if status == -1 else status  # -1: paramiko's "closed without a status"

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def open_channel(self, command: str) -> paramiko.Channel:
        """A session running ``command`` as given (already escaped by the caller, e.g.
        rsync): for byte pipes in both directions. Prefer ``run`` and ``stream``."""
        if self._transport is None or not self._transport.is_active():
            raise RemoteError(f"{self.target.label}: not connected", transient=True)
        chan = self._transport.open_session(timeout=self.target.connect_timeout)
        chan.exec_command(command)
        return chan

    def interactive(self, argv: Sequence[str]) -> Interactive:
        """Start argv with its stdin kept open, for a conversation (e.g. a held psql)."""
        if self._transport is None or not self._transport.is_active():
            raise RemoteError(f"{self.target.label}: not connected", transient=True)
        log.debug("%s: interactive: %s", self.target.label, mask_argv(argv))
        try:
            chan = self._transport.open_session(timeout=self.target.connect_timeout)
            chan.settimeout(POLL_SECONDS)
            chan.exec_command(remote_command_line(argv))
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise RemoteError(
                f"{self.target.label}: cannot start {argv[0]}: {e}", transient=True
            ) from None
        return Interactive(self.target.label, argv[0], chan)

    # -- running ------------------------------------------------------------------
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        secrets: Sequence[str] = (),
    ) -> CommandResult:
        """Run argv to completion, capturing stdout (up to 64 MiB) and stderr."""
        out = bytearray()

        def keep(chunk: bytes) -> None:
            if len(out) + len(chunk) > RUN_OUTPUT_LIMIT:
                raise RemoteError(f"{self.target.label}: output of {argv[0]} exceeds 64 MiB")
            out.extend(chunk)

        status, err, seconds, timed_out = self._exec(argv, keep, timeout, timeout, stdin, secrets)
        return CommandResult(tuple(argv), status, bytes(out), err, seconds, timed_out)

    def stream(
        self,
        argv: Sequence[str],
        sink: Callable[[bytes], object],
        *,
        deadline: float,
        idle_timeout: float,
        stdin: bytes | None = None,
    ) -> StreamResult:
        """Run argv and hand its stdout to ``sink`` chunk by chunk, hashing as it passes."""
        digest = hashlib.sha256()
        count = 0

        def forward(chunk: bytes) -> None:
            nonlocal count
            digest.update(chunk)
            count += len(chunk)
            sink(chunk)

        facts: list[str] = []
        status, err, seconds, timed_out = self._exec(
            argv, forward, deadline, idle_timeout, stdin, fact_lines=facts
        )
        return StreamResult(
            tuple(argv),
            status,
            count,
            digest.hexdigest(),
            tail_text(err),
            seconds,
            timed_out,
            tuple(facts),
            self.why_lost(time.monotonic() - self.last_heard) if timed_out == "lost" else "",
        )

    def _exec(
        self,
        argv: Sequence[str],
        on_stdout: Callable[[bytes], None],
        deadline: float,
        idle_timeout: float,
        stdin: bytes | None = None,
        secrets: Sequence[str] = (),
        fact_lines: list[str] | None = None,
    ) -> tuple[int | None, bytes, float, str | None]:
        if self._transport is None or not self._transport.is_active():
            raise RemoteError(f"{self.target.label}: not connected", transient=True)
        command = remote_command_line(argv)
        log.debug("%s: run: %s", self.target.label, mask_argv(argv, secrets))
        started = time.monotonic()
        try:
            chan = self._transport.open_session(timeout=self.target.connect_timeout)
            chan.settimeout(POLL_SECONDS)
            chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise RemoteError(
                f"{self.target.label}: cannot start {argv[0]}: {e}", transient=True
            ) from None
        stderr = StderrCollector(chan, fact_lines)
        self.last_heard = time.monotonic()

        def heard(chunk: bytes) -> None:
            self.last_heard = time.monotonic()
            on_stdout(chunk)

        try:
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            try:
                timed_out = pump(
                    chan, heard, started + deadline, idle_timeout, lambda: stderr.last_progress
                )
            except BaseException:  # stopped, or our reader went away: stop the droplet side
                terminate(chan)
                raise
            if timed_out is not None:
                terminate(chan)
                status: int | None = None
            else:
                status = self._exit_status(chan)
                if status is None and not self.alive():
                    timed_out = "lost"
        finally:
            chan.close()
            stderr.join()
            stderr.flush()
        return status, stderr.data, time.monotonic() - started, timed_out


def _keep_alive(sock: socket.socket, dead_after: float) -> None:
    """Let the kernel find a peer that went away: TCP keepalive probes while idle, and
    TCP_USER_TIMEOUT for data that stays unacknowledged. Without them a cut link holds a
    connection (and our side of a dump) for the kernel's retransmission timeout, ~15 min."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    probe = max(1, int(dead_after / 3))
    options = {
        "TCP_KEEPIDLE": probe,
        "TCP_KEEPINTVL": probe,
        "TCP_KEEPCNT": 3,
        "TCP_USER_TIMEOUT": int(dead_after * 1000),
    }
    for name, value in options.items():
        if hasattr(socket, name):  # Linux names; elsewhere the kernel's defaults stay
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def offered_host_key(target: SSHTarget) -> paramiko.PKey:
    """The host key the droplet offers, without logging in (`backupctl host trust`):
    negotiated as ``Connection.open`` does, so it is the key a backup would be shown."""
    transport = _handshake(target, pinned_keys(target))
    try:
        return transport.get_remote_server_key()
    finally:
        transport.close()


def _handshake(t: SSHTarget, pinned: Sequence[str]) -> paramiko.Transport:
    """A transport past key exchange (the server's key known, nobody logged in yet)."""
    try:
        sock = socket.create_connection((t.address, t.port), timeout=t.connect_timeout)
    except OSError as e:
        raise RemoteError(f"{t.where}: cannot connect: {_reason(e)}", transient=True) from None
    _keep_alive(sock, t.dead_peer_timeout)
    transport = paramiko.Transport(sock, default_max_packet_size=MAX_PACKET)
    opts = transport.get_security_options()
    opts.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in opts.ciphers) or opts.ciphers
    # Ask for the pinned key type: a server with several host keys would otherwise offer
    # the one paramiko prefers, and a correct pin of another type would look changed.
    offered = tuple(k for k in {line.split()[0] for line in pinned} if k in opts.key_types)
    if offered:
        opts.key_types = offered
    try:
        transport.start_client(timeout=t.connect_timeout)
    except (paramiko.SSHException, OSError, EOFError) as e:
        transport.close()
        raise RemoteError(f"{t.where}: SSH handshake failed: {_said(e)}", transient=True) from None
    # start_client returns at its timeout without a word when the other side is silent
    if not (transport.is_active() and transport.initial_kex_done):
        transport.close()
        raise RemoteError(
            f"{t.where}: SSH handshake failed: no answer within {t.connect_timeout:g} s (the "
            "port accepts connections but no SSH server speaks on it, or the droplet is too "
            "busy to answer)",
            transient=True,
        )
    return transport


def _said(e: BaseException) -> str:
    """paramiko's reason, readable: no SSH banner is a port that is not sshd's, or an sshd
    dropping connections before it answers (over its MaxStartups)."""
    text = str(e).replace("banner[", "banner: [") or type(e).__name__
    if "protocol banner" in text:
        return f"{text} (no SSH server answered on this port, or it dropped us: MaxStartups?)"
    return text


def _reason(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__
