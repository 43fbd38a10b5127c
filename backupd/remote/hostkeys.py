"""Which droplet we connect to, and which host key we trust for it.

A key is pinned by the config (``host_key``, or the host's own ``known_hosts`` file) or by
`backupctl host trust` in backupd's pin file ``<state_dir>/known_hosts``. Anything else is
refused, with a one-line reason that names the way out for where the pin lives.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupd.errors import HostKeyError

if TYPE_CHECKING:  # paramiko is imported where a connection is made: not in the daemon's
    import paramiko  # scheduler process, which only names targets (its memory at rest)

PIN_FILE_NAME = "known_hosts"


@dataclass(frozen=True)
class SSHTarget:
    label: str  # the host's name in the config, used in every message
    address: str
    port: int
    user: str
    key_path: Path
    host_keys: tuple[str, ...] = ()  # pinned "TYPE BASE64" lines
    known_hosts: Path | None = None
    connect_timeout: float = 20.0
    # known_hosts is backupd's own <state_dir>/known_hosts (`backupctl host trust`): a
    # missing file pins nothing yet, and a refusal names that command, not a config key.
    pin_file: bool = False
    # a peer that acknowledges nothing for this long is gone (a cut link, a dead droplet):
    # TCP keepalives and TCP_USER_TIMEOUT end the connection, SSH keepalives probe it
    dead_peer_timeout: float = 30.0

    @property
    def where(self) -> str:
        return f"{self.label} ({self.address}:{self.port})"

    @property
    def lookup(self) -> str:
        """The host's name in a known_hosts file, as OpenSSH writes it."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


def target_to_json(target: SSHTarget) -> dict[str, Any]:
    data = asdict(target)
    data["key_path"] = str(target.key_path)
    data["known_hosts"] = str(target.known_hosts) if target.known_hosts else None
    return data


def target_from_json(t: dict[str, Any]) -> SSHTarget:
    return SSHTarget(
        label=t["label"],
        address=t["address"],
        port=int(t["port"]),
        user=t["user"],
        key_path=Path(t["key_path"]),
        host_keys=tuple(t["host_keys"]),
        known_hosts=Path(t["known_hosts"]) if t["known_hosts"] else None,
        connect_timeout=float(t["connect_timeout"]),
        pin_file=bool(t.get("pin_file", False)),
        dead_peer_timeout=float(t.get("dead_peer_timeout", 30.0)),
    )


def pin_file(state_dir: Path) -> Path:
    """backupd's own known_hosts: the keys `backupctl host trust` pinned."""
    return state_dir / PIN_FILE_NAME


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def fingerprint_line(line: str) -> str:
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def pinned_keys(t: SSHTarget) -> tuple[str, ...]:
    """The "TYPE BASE64" keys pinned for the target: its host_key, or its known_hosts entries."""
    if t.known_hosts is None:
        return t.host_keys
    if t.pin_file and not t.known_hosts.exists():
        return ()  # nothing trusted yet: `backupctl host trust` creates the file
    import paramiko

    try:
        known = paramiko.HostKeys(str(t.known_hosts))
    except OSError as e:
        raise HostKeyError(
            f"{t.label}: cannot read known_hosts {t.known_hosts}: {e.strerror}"
        ) from None
    except (paramiko.SSHException, paramiko.hostkeys.InvalidHostKey, ValueError) as e:
        raise HostKeyError(
            f"{t.label}: known_hosts {t.known_hosts} has a malformed line: {e}"
        ) from None
    entries = known.lookup(t.lookup)
    return tuple(f"{kt} {entries[kt].get_base64()}" for kt in entries) if entries else ()


def key_matches(key: paramiko.PKey, pinned: Sequence[str]) -> bool:
    offered = [key.get_name(), key.get_base64()]
    return any(offered == line.split()[:2] for line in pinned)


def refusal(t: SSHTarget, key: paramiko.PKey, pinned: Sequence[str]) -> str:
    """Why a connection to ``t`` is refused when it offers ``key``: one line, with the way
    out for where the pin lives (config or backupd's pin file)."""
    offered = f"{key.get_name()} {fingerprint(key)}"
    trust = f"backupctl host trust {t.label}"
    if not pinned:
        if t.known_hosts is not None and not t.pin_file:
            return (
                f"{t.where}: unknown host key {offered}: known_hosts {t.known_hosts} has no "
                f"key for {t.lookup}; refusing to connect (check the key out of band, then "
                "add it to that file)"
            )
        return (
            f"{t.where}: unknown host key {offered}: no key is pinned for this host; refusing "
            f"to connect (check the fingerprint out of band, then pin it: {trust})"
        )
    expected = ", ".join(fingerprint_line(line) for line in pinned)
    if t.pin_file:
        how = f"run {trust}, which shows both keys and asks before replacing"
    elif t.known_hosts is not None:
        how = f"update {t.known_hosts}"
    else:
        how = f"update host_key of [hosts.{t.label}] in the config"
    return (
        f"{t.where}: HOST KEY CHANGED: offered {offered}, pinned {expected}; refusing to "
        f"connect. If the droplet was rebuilt, check the new key out of band, then {how}"
    )
