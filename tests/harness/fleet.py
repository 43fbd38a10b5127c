"""Write a backupd config (TOML) for droplets started by the harness; used by tests and demo."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.droplet import Droplet

Value = str | int | float | bool | list[str] | Mapping[str, "Value"]


@dataclass
class HostSpec:
    name: str
    droplet: Droplet
    sources: Mapping[str, Mapping[str, Value]] = field(default_factory=dict)
    host_key: str | None = None  # defaults to the droplet's real key
    settings: Mapping[str, Value] = field(default_factory=dict)  # more [hosts.NAME] keys


def toml_value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    if isinstance(value, Mapping):  # an inline table: retention = { keep_last = 1 }
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_passphrase(path: Path) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(24) + "\n")
    return path


def write_fleet_config(
    path: Path,
    *,
    state_dir: Path,
    store: Path,
    passphrase_file: Path,
    hosts: list[HostSpec],
    extra: str = "",
    borg: Path | None = None,
) -> Path:
    """``extra``: more TOML (e.g. ``[daemon]`` settings), appended as it is; ``borg``: the
    ``[store] borg`` executable (the venv's when None). A daemon's metrics are served on
    any free port unless ``extra`` has a ``[metrics]`` table: daemons of tests running at
    once never compete for the default one."""
    lines = [
        f"state_dir = {toml_value(str(state_dir))}",
        "",
        "[store]",
        f"path = {toml_value(str(store))}",
        *([f"borg = {toml_value(str(borg))}"] if borg is not None else []),
        "",
        "[passphrase]",
        f"file = {toml_value(str(passphrase_file))}",
    ]
    for host in hosts:
        d = host.droplet
        lines += [
            "",
            f"[hosts.{host.name}]",
            f"address = {toml_value(d.address)}",
            f"port = {d.port}",
            f"user = {toml_value(d.user)}",
            f"key = {toml_value(str(d.key_path))}",
            f"host_key = {toml_value(host.host_key or d.host_key_line)}",
            "connect_timeout = 10",
            *(f"{k} = {toml_value(v)}" for k, v in host.settings.items()),
        ]
        for name, options in host.sources.items():
            lines += ["", f"[hosts.{host.name}.sources.{name}]"]
            lines += [f"{k} = {toml_value(v)}" for k, v in options.items()]
    if "[metrics]" not in extra:
        extra = f'[metrics]\nlisten = "127.0.0.1:0"\n{extra}'
    path.write_text("\n".join(lines) + "\n\n" + extra + "\n")
    return path
