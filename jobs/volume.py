"""Docker named volumes: found with ``docker volume inspect``, then pulled as a directory."""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import AbstractContextManager

from pydantic import field_validator

from backupd.errors import DumpError
from jobs.base import DumpStream, Held, RemoteShell, Unit, nothing_held
from jobs.directory import TreeOptions

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
        prefix = ("sudo", "-n") if options.sudo else ()
        argv = (
            *prefix,
            options.docker,
            "volume",
            "inspect",
            "--format",
            "{{ .Mountpoint }}",
            "--",
            options.volume,
        )
        result = remote.run(argv, timeout=60)
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
        prefix = ("sudo", "-n") if options.sudo else ()
        argv = (*prefix, options.docker, "volume", "inspect", "--", options.volume)
        result = remote.run(argv, timeout=60)
        return not result.ok and b"no such volume" in result.stderr.lower()


KIND = Volume()
