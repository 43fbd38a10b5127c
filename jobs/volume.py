"""Docker named volumes: found with ``docker volume inspect``, then pulled as a directory."""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import AbstractContextManager

from pydantic import field_validator

from backupd.errors import DumpError
from jobs.base import DumpStream, Held, RemoteShell, Unit, nothing_held, unreadable_argv
from jobs.directory import TreeOptions
from jobs.gating import GateRequest, Param, Tree

VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # Docker's own rule


class VolumeOptions(TreeOptions):
    volume: str
    docker: str = "docker"

    @field_validator("volume")
    @classmethod
    def _name(cls, value: str) -> str:
        if not VOLUME_NAME.match(value):
            raise ValueError("not a Docker volume name")
        return value


class Volume:
    name = "volume"
    options_model = VolumeOptions

    def plan(self, options: VolumeOptions, remote: RemoteShell) -> Sequence[Unit]:
        result = remote.run(_mountpoint_argv(options), timeout=60)
        mountpoint = result.stdout.decode().strip()
        if not result.ok or not mountpoint.startswith("/"):
            raise DumpError(
                f"docker volume inspect {options.volume} failed (exit {result.exit_status})",
                stderr_tail=result.stderr_tail(),
            )
        return [options.transfer(options.volume, mountpoint)]

    def hold(
        self, options: VolumeOptions, stream: DumpStream, remote: RemoteShell
    ) -> AbstractContextManager[Held]:
        return nothing_held()

    def vanished(self, options: VolumeOptions, unit: Unit, remote: RemoteShell) -> bool:
        """The volume was removed since the plan (``docker volume rm``)."""
        result = remote.run(_inspect_argv(options), timeout=60)
        return not result.ok and b"no such volume" in result.stderr.lower()

    def gate_requests(self, options: VolumeOptions, source: str) -> list[GateRequest]:
        """Besides the tree (TreeOptions.gate_requests_for; the gate asks Docker itself
        where it is): where the volume is, and whether it is gone."""
        tree = Tree(inspect=_mountpoint_argv(options), sudo=options.sudo, rrsync=options.rrsync)
        top = Param("mountpoint", "tree", tree=tree, suffix="/")
        find = tuple(top if a == "/" else a for a in unreadable_argv(""))
        return [
            *options.gate_requests_for(source, tree, find),
            GateRequest(f"{source}: where the volume is", _mountpoint_argv(options)),
            GateRequest(f"{source}: is the volume gone", _inspect_argv(options)),
        ]

    def droplet_setup(self, options: VolumeOptions, source: str, login: str) -> list[str]:
        return []  # the login reads what it backs up: the operator's to grant


def _inspect_argv(options: VolumeOptions) -> tuple[str, ...]:
    return (*options.remote_prefix(), options.docker, "volume", "inspect", "--", options.volume)


def _mountpoint_argv(options: VolumeOptions) -> tuple[str, ...]:
    return (
        *options.remote_prefix(),
        options.docker,
        "volume",
        "inspect",
        "--format",
        "{{ .Mountpoint }}",
        "--",
        options.volume,
    )


KIND = Volume()
