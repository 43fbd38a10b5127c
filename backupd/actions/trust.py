"""host trust: pin a droplet's SSH host key in backupd's own known_hosts after a person
compared its fingerprint with the droplet's.

A key pinned by the config (``host_key``, or the host's own ``known_hosts``) is never
touched here: the config is the operator's, and a mismatch there is refused with the way
to fix it. Only a host without either gets its key in ``<state_dir>/known_hosts``, the
file its connections then check (``ssh_target``). Nothing is written until the caller has
the offered key confirmed; a changed key is reported as such before it is replaced.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import paramiko

from backupd.actions.context import Context, ssh_target
from backupd.config.load import HostConfig
from backupd.errors import HostKeyError
from backupd.remote.ssh import (
    SSHTarget,
    fingerprint,
    fingerprint_line,
    key_matches,
    offered_host_key,
    pinned_keys,
)


@dataclass(frozen=True)
class Offer:
    """What a droplet offered and how it compares with what is pinned for it."""

    host: str
    where: str  # "web1 (203.0.113.7:22)"
    key_type: str
    key_line: str  # "TYPE BASE64", as written into known_hosts
    fingerprint: str  # SHA256:...
    state: str  # "trusted" (nothing to do), "new" or "changed"
    pinned_in: str  # where the pin that decided "trusted" or "changed" lives
    previous: tuple[str, ...] = ()  # "TYPE SHA256:..." of pinned keys it would replace
    pin_file: Path | None = None  # where it will be recorded (None: pinned by the config)
    lookup: str = ""  # the host's name in known_hosts: addr, or [addr]:port


def inspect_host(ctx: Context, host: HostConfig) -> Offer:
    """Fetch the offered key (no login) and compare it with the pins; raise HostKeyError
    when the config pins another key, or names a known_hosts file without this host."""
    target = ssh_target(host, ctx.config.state_dir)
    pinned = pinned_keys(target)
    key = offered_host_key(target)
    line = f"{key.get_name()} {key.get_base64()}"
    if not target.pin_file:
        where = _config_pin(ctx, target)
        if key_matches(key, pinned):
            return Offer(
                host.name, target.where, key.get_name(), line, fingerprint(key), "trusted", where
            )
        raise HostKeyError(_config_refusal(target, key, pinned, where))
    assert target.known_hosts is not None  # a pin-file target always names the file
    pin = target.known_hosts
    state = "trusted" if key_matches(key, pinned) else "changed" if pinned else "new"
    return Offer(
        host=host.name,
        where=target.where,
        key_type=key.get_name(),
        key_line=line,
        fingerprint=fingerprint(key),
        state=state,
        pinned_in=str(pin),
        previous=tuple(f"{p.split()[0]} {fingerprint_line(p)}" for p in pinned),
        pin_file=pin,
        lookup=target.lookup,
    )


def same_fingerprint(given: str, offer: Offer) -> bool:
    """``--fingerprint`` as ssh-keygen -l prints it; the "SHA256:" and padding optional."""
    text = given.strip().rstrip("=")
    if not text.startswith("SHA256:"):
        text = "SHA256:" + text
    return text == offer.fingerprint


def record(ctx: Context, offer: Offer) -> Path:
    """Write the confirmed key into backupd's pin file, replacing the host's old entries."""
    if offer.pin_file is None:
        raise HostKeyError(f"{offer.where}: its key is pinned by the config, not by backupd")
    ctx.private_dir(offer.pin_file.parent)
    old = offer.pin_file.read_text().splitlines() if offer.pin_file.exists() else []
    kept = [kept for line in old if (kept := _without_host(line, offer.lookup)) is not None]
    write_atomically(
        offer.pin_file, "".join(f"{k}\n" for k in kept) + f"{offer.lookup} {offer.key_line}\n"
    )
    return offer.pin_file


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of it; the file is 0600."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def _without_host(line: str, lookup: str) -> str | None:
    """The known_hosts line without ``lookup`` among its names; None when nothing is left.
    Comments, markers (@revoked) and other hosts' lines are kept as they are."""
    fields = line.split(maxsplit=1)
    if len(fields) < 2 or line.lstrip().startswith(("#", "@")):
        return line
    names = fields[0].split(",")
    left = [n for n in names if not _names(n, lookup)]
    if len(left) == len(names):
        return line
    return f"{','.join(left)} {fields[1]}" if left else None


def _names(pattern: str, lookup: str) -> bool:
    if pattern.startswith("|1|"):  # HashKnownHosts: compare by hashing with its salt
        return paramiko.HostKeys.hash_host(lookup, pattern) == pattern
    return pattern == lookup


def _config_pin(ctx: Context, target: SSHTarget) -> str:
    if target.known_hosts is not None:
        return f"known_hosts {target.known_hosts}, named in {ctx.config.path}"
    return f"host_key of [hosts.{target.label}] in {ctx.config.path}"


def _config_refusal(
    target: SSHTarget, key: paramiko.PKey, pinned: tuple[str, ...], where: str
) -> str:
    offered = f"{key.get_name()} {fingerprint(key)}"
    if not pinned:
        return (
            f"{target.where}: offers {offered}, but its key is pinned by the config in "
            f"{where}, which has no key for {target.lookup}: check the key out of band and "
            "add it to that file; nothing changed"
        )
    expected = ", ".join(f"{p.split()[0]} {fingerprint_line(p)}" for p in pinned)
    return (
        f"{target.where}: HOST KEY CHANGED: offered {offered}, but the config pins "
        f"{expected} ({where}); nothing changed. The pin lives in the config file: check "
        "the new key out of band, then edit it there"
    )
