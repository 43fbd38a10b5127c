"""The one place an rsync command line is built: rsync to or from a droplet through
backupd's own SSH seam (``--rsh`` runs ``backupd.remote.rsh``: the pinned host key, the
configured key file), names passed as data (``--protect-args``), holes kept (``--sparse``)
and the wire compressed. A pull into the mirror and a push onto a droplet add their own
options."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backupd.remote.hostkeys import SSHTarget, target_to_json

Argv = tuple[str, ...]
COMMON = ("--archive", "--hard-links", "--sparse", "--compress")


@contextmanager
def rsync_over_ssh(
    run_dir: Path, target: SSHTarget, tag: str, rsync_path: str, *, gated: bool = False
) -> Iterator[Argv]:
    """``rsync`` with the common options, ``--rsh`` and ``--rsync-path``: append the
    command's own options, then source and destination. The connection spec (0600, no
    secrets) lives in ``run_dir`` while the command runs and is removed afterwards.
    ``gated``: the droplet's gate hands the request to rrsync, which must see the paths
    on the command line (rsync then quotes them itself, with backslashes) and decides
    about sudo itself: no ``--protect-args``, the plain ``rsync`` path."""
    spec = run_dir / f"rsh-{tag}.json"
    fd = os.open(spec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(target_to_json(target), f)
    try:
        rsh = shlex.join((sys.executable, "-m", "backupd.remote.rsh", str(spec)))
        names = () if gated else ("--protect-args",)
        path = "rsync" if gated else rsync_path
        yield ("rsync", *COMMON, *names, "--rsh", rsh, f"--rsync-path={path}")
    finally:
        spec.unlink(missing_ok=True)
