"""A remote shell for rsync (``rsync -e``) that connects through backupd's SSH seam.

rsync runs ``python -m backupd.remote.rsh SPEC HOST COMMAND...``; we open the pinned-key
paramiko connection described by SPEC (JSON, 0600, no secrets), run COMMAND (rsync
already escaped it for the remote shell, as it would for ssh) and copy bytes both ways
until the remote side exits, then exit with its status.
"""

from __future__ import annotations

import json
import os
import select
import sys
import threading
from pathlib import Path

from backupd.errors import BackupdError
from backupd.local.process import signal_when_parent_dies
from backupd.remote.channel import READ_SIZE
from backupd.remote.hostkeys import target_from_json
from backupd.remote.ssh import Connection

EXIT_CONNECT = 255  # what ssh returns when it cannot connect; rsync reports it as such


def _pump_stdin(chan: object) -> None:
    send = chan.sendall  # type: ignore[attr-defined]
    try:
        while data := os.read(0, READ_SIZE):
            send(data)
    except OSError:
        pass
    finally:
        chan.shutdown_write()  # type: ignore[attr-defined]


def _pump_stderr(chan: object) -> None:
    recv = chan.recv_stderr  # type: ignore[attr-defined]
    while data := recv(65536):
        _write_all(2, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:  # rsync may hand us non-blocking descriptors
            select.select([], [fd], [], 5)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3:
        print("usage: python -m backupd.remote.rsh SPEC HOST COMMAND...", file=sys.stderr)
        return 2
    spec, _host, command = args[0], args[1], " ".join(args[2:])
    signal_when_parent_dies()  # rsync gone (killed with backupd): so are we, and the session
    for fd in (0, 1, 2):
        os.set_blocking(fd, True)
    target = target_from_json(json.loads(Path(spec).read_text()))
    try:
        conn = Connection(target)
        conn.open()
    except BackupdError as e:
        print(f"backupd rsh: {e}", file=sys.stderr)
        return EXIT_CONNECT
    try:
        chan = conn.open_channel(command)
        chan.settimeout(None)
        threading.Thread(target=_pump_stdin, args=(chan,), daemon=True).start()
        err = threading.Thread(target=_pump_stderr, args=(chan,), daemon=True)
        err.start()
        while data := chan.recv(READ_SIZE):
            _write_all(1, data)
        status = chan.recv_exit_status()
        err.join(timeout=5)
        if not conn.alive():
            print(
                f"backupd rsh: connection to {target.label} lost (no answer within "
                f"{target.dead_peer_timeout:.0f}s, or closed from the droplet's side)",
                file=sys.stderr,
            )
            return EXIT_CONNECT
        return status if status >= 0 else EXIT_CONNECT
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
