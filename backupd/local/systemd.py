"""A minimal sd_notify(3) client: readiness, status, watchdog pings to systemd.

Hand-written rather than a dependency: the protocol is one datagram of ``KEY=VALUE`` lines
sent to the AF_UNIX socket named in ``$NOTIFY_SOCKET``. Outside systemd (a terminal,
``--once``, the tests) the variable is unset and every call is a cheap no-op. Sending must
never take the daemon down: a lost STATUS= line is harmless, a crash is not.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("backupd.local.systemd")

# The notify socket is local and systemd reads it promptly; a full queue means the manager
# is stuck, and waiting on it would stall the daemon's loop (and so its watchdog pings).
SEND_TIMEOUT = 1.0


def notify(*fields: str) -> bool:
    """Send ``fields`` (e.g. "READY=1", "STATUS=...") as one message; True when sent."""
    address = _socket_address(os.environ.get("NOTIFY_SOCKET", ""))
    if address is None or not fields:
        return False
    message = "\n".join(fields).encode("utf-8", errors="replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(SEND_TIMEOUT)
            sock.sendto(message, address)
    except OSError as e:
        log.debug("sd_notify to %r failed: %s", os.environ.get("NOTIFY_SOCKET"), e)
        return False
    return True


def _socket_address(value: str) -> str | bytes | None:
    """The address to send to: a path, or an abstract name ("@name" means a leading NUL)."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # unset, or not an address systemd would give us


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None when not asked.

    Half, as sd_watchdog_enabled(3) advises, so one late loop does not trip the watchdog.
    ``$WATCHDOG_PID`` names the process systemd expects pings from; a child that inherited
    the variables (a worker) must not think it is watched.
    """
    usec = _positive_int(os.environ.get("WATCHDOG_USEC"))
    if usec is None:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and _positive_int(pid) != os.getpid():
        return None
    return usec / 2_000_000


def under_journald() -> bool:
    """Whether stderr goes to the journal, which stamps each line with its own time.

    ``$JOURNAL_STREAM`` is "DEVICE:INODE" of the stream systemd connected; a child that
    inherited the variable but writes its stderr elsewhere (a pipe, a file) is not under
    journald, so the stream must be the one on our stderr (as systemd.exec(5) advises).
    """
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        st = os.fstat(2)
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(value or "")
    except ValueError:
        return None
    return number if number > 0 else None
