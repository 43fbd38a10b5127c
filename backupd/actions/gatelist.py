"""The gate's allowlist for a host, generated from backupd's config (decision 0022)."""

from __future__ import annotations

from typing import Any

from backupd.config.load import HostConfig
from backupd.errors import UsageError
from backupd.remote.droplet_gate import GATE_VERSION, requests_digest
from jobs.gating import GateRequest, requests_json
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
