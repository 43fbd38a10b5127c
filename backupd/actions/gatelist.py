"""The gate's allowlist for a host, generated from backupd's config (decision 0022)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backupd.config.load import HostConfig
from backupd.errors import UsageError
from backupd.remote.droplet_gate import GATE_VERSION, requests_digest
from jobs.gating import GateRequest, Tree, requests_json
from jobs.registry import registry


def allowlist(host: HostConfig) -> dict[str, Any]:
    """The allowlist of ``host``: every request its sources make, as the gate reads it
    (JSON-ready). UsageError naming every source whose options keep it from going
    through the gate, each with why."""
    from backupd.remote.ssh import WRAP_SCRIPT  # paramiko comes with it: not at import

    requests: list[GateRequest] = []
    ungated: list[str] = []
    for source in host.sources.values():
        try:
            requests += registry()[source.kind].gate_requests(source.options, source.name)
        except UsageError as e:
            ungated.append(f"{host.name}/{source.name} ({e})")
    if ungated:
        raise UsageError(f"these sources cannot go through the gate: {'; '.join(ungated)}")
    listed = requests_json(requests)
    return {
        "gate": GATE_VERSION,
        "host": host.name,
        "digest": requests_digest(listed),
        "wrapper": WRAP_SCRIPT,
        "requests": listed,
    }


def restore_targets(host: HostConfig) -> list[Tree]:
    """Where restores may write on ``host`` through the gate (the restore key's
    allowlist): each directory source's own tree (as root when it is read as root) and
    each of the host's ``restore_paths`` (as the login)."""
    targets: dict[str, Tree] = {}
    for source in host.sources.values():
        for request in registry()[source.kind].gate_requests(source.options, source.name):
            tree = request.tree
            if tree is not None and tree.path is not None:
                targets.setdefault(tree.path, Tree(tree.path, None, tree.sudo, tree.rrsync, True))
    rrsync = next(iter(targets.values())).rrsync if targets else "rrsync"
    for path in host.restore_paths:
        targets.setdefault(path, Tree(path, None, False, rrsync, True))
    return list(targets.values())


def restore_allowlist(host: HostConfig) -> dict[str, Any]:
    """The restore key's allowlist of ``host``: for each restore target, rsync writing
    into it through ``rrsync -wo``, creating it, and looking whether it holds files
    (backupd/actions/restore_push.py sends exactly these). No database verbs yet."""
    from backupd.remote.ssh import WRAP_SCRIPT

    requests: list[GateRequest] = []
    for tree in restore_targets(host):
        assert tree.path is not None
        prefix = ("sudo", "-n") if tree.sudo else ()
        requests += [
            GateRequest(f"restore into {tree.path}", tree=tree),
            GateRequest(f"create {tree.path}", (*prefix, "mkdir", "-p", "--", tree.path)),
            GateRequest(f"look into {tree.path}", (*prefix, *non_empty_probe(tree.path))),
        ]
    listed = requests_json(requests)
    return {
        "gate": GATE_VERSION,
        "host": f"{host.name} (restore)",
        "digest": requests_digest(listed),
        "wrapper": WRAP_SCRIPT,
        "requests": listed,
    }


def non_empty_probe(path: str) -> tuple[str, ...]:
    """Prints one entry of the directory ``path`` if it has any (restore --to-host)."""
    return ("find", path, "-mindepth", "1", "-maxdepth", "1", "-print", "-quit")


def restore_key_file(host: HostConfig) -> Path:
    """The host's restore key file, if the operator alone may read it (0600, as for
    OpenSSH). UsageError: none configured, unreadable, or readable by others."""
    key = host.restore_key
    if key is None:
        raise UsageError(
            f"{host.name} is gated: a restore onto it needs restore_key (the daemon's key "
            "cannot write there); see docs/droplet-setup.md"
        )
    try:
        mode = key.stat().st_mode
    except OSError as e:
        raise UsageError(f"{host.name}: cannot read restore_key {key}: {e.strerror}") from None
    if mode & 0o077:
        raise UsageError(
            f"{host.name}: restore_key {key} is readable by others (mode {mode & 0o777:o}): "
            "it must be 0600, readable by the operator alone (not the daemon's user)"
        )
    return key
