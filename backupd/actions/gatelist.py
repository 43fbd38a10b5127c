"""The gate's allowlist for a host, generated from backupd's config (decision 0022)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from backupd.config.load import HostConfig
from backupd.errors import UsageError
from backupd.remote.droplet_gate import GATE_VERSION, requests_digest
from jobs.gating import GateRequest, Param, RestoreGate, Tree, requests_json
from jobs.registry import database_kinds, registry

A = TypeVar("A", str, Param)


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
    allowlist): each tree source's own tree (a directory's path, a volume's mountpoint as
    Docker says it; as root when it is read as root) and each of the host's
    ``restore_paths`` (as the login)."""
    targets: dict[str, Tree] = {}
    for source in host.sources.values():
        for request in registry()[source.kind].gate_requests(source.options, source.name):
            tree = request.tree
            if tree is not None:
                write = dataclasses.replace(tree, write=True)
                targets.setdefault(repr((tree.path, tree.inspect)), write)
    rrsync = next(iter(targets.values())).rrsync if targets else "rrsync"
    for path in host.restore_paths:
        targets.setdefault(repr((path, None)), Tree(path, None, False, rrsync, True))
    return list(targets.values())


def restore_gates(host: HostConfig) -> dict[str, RestoreGate]:
    """source name -> how it restores into a database on ``host`` through the gate, for
    each database source whose kind can (the others are refused when asked)."""
    gates = {}
    for source in host.sources.values():
        kind = database_kinds().get(source.kind)
        if kind is not None:
            try:
                gates[source.name] = kind.restore_gate(source.options, source.name)
            except UsageError:
                continue
    return gates


def restore_allowlist(host: HostConfig) -> dict[str, Any]:
    """The restore key's allowlist of ``host``: for each restore target, rsync writing
    into it through ``rrsync -wo``, creating it, and looking whether it holds files, and
    for a volume asking Docker where it is (backupd/actions/restore_push.py sends exactly
    these); for each database source, its kind's restore requests (restore_gates)."""
    from backupd.remote.ssh import WRAP_SCRIPT

    requests: list[GateRequest] = []
    for gate in restore_gates(host).values():
        requests += gate.requests
    for tree in restore_targets(host):
        prefix = ("sudo", "-n") if tree.sudo else ()
        name = tree.path or f"volume {(tree.inspect or ('?',))[-1]}"
        mkdir: tuple[str | Param, ...] = ("mkdir", "-p", "--")
        create: tuple[str | Param, ...]
        probe: tuple[str | Param, ...]
        if tree.path is not None:
            create, probe = (*mkdir, tree.path), non_empty_probe(tree.path)
        else:  # a volume: the gate asks Docker where it is, as for reading it
            top = Param("top", "tree", tree=tree)
            create, probe = (*mkdir, top), non_empty_probe(top)
        requests += [
            GateRequest(f"restore into {name}", tree=tree),
            GateRequest(f"create {name}", (*prefix, *create)),
            GateRequest(f"look into {name}", (*prefix, *probe)),
        ]
        if tree.inspect:
            requests.append(GateRequest(f"where is {name}", tree.inspect))
    listed = requests_json(requests)
    return {
        "gate": GATE_VERSION,
        "host": f"{host.name} (restore)",
        "digest": requests_digest(listed),
        "wrapper": WRAP_SCRIPT,
        "requests": listed,
    }


def non_empty_probe(path: A) -> tuple[str | A, ...]:
    """Prints one entry of the directory ``path`` if it has any (restore --to-host)."""
    return ("find", path, "-mindepth", "1", "-maxdepth", "1", "-print", "-quit")


def restore_writer(host: HostConfig) -> HostConfig:
    """``host`` as the operator's restore key reaches it (restore_key_file's checks)."""
    return host.model_copy(update={"key": restore_key_file(host)})


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
