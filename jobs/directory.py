"""Directories: a remote tree mirrored incrementally with rsync, archived file by file.

rsync over backupd's own SSH seam (``backupd/remote/rsh.py``) updates a private mirror on the
store host; Borg then archives the mirror with its files cache, so a second pull moves
and reads only what changed. Optional ``before``/``after`` commands on the droplet (an
LVM/btrfs snapshot, ``docker pause``) bracket the transfer; ``after`` always runs, and a
crash is caught up at the next start (pending cleanups are kept in the catalogue).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import PurePosixPath

from pydantic import field_validator

from backupd.config.units import Duration
from jobs.base import (
    DumpStream,
    Held,
    Options,
    RemoteShell,
    TreeTransfer,
    Unit,
    nothing_held,
    path_gone,
    unreadable_argv,
)
from jobs.gating import GateRequest, Param, Tree, hook_requests


class TreeOptions(Options):
    excludes: tuple[str, ...] = ()  # rsync patterns, relative to the tree's root
    before: tuple[str, ...] | None = None  # argv run on the droplet first
    after: tuple[str, ...] | None = None  # argv always run on the droplet afterwards
    sudo: bool = False  # read the tree as root on the droplet (sudo -n rsync)
    rsync: str = "rsync"
    rrsync: str = "rrsync"  # on a gated droplet: rsync's own restricted wrapper (decision 0022)
    hook_timeout: Duration = 600.0

    @field_validator("before", "after")
    @classmethod
    def _non_empty(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError("give the command as a non-empty list of arguments")
        return value

    def remote_prefix(self) -> tuple[str, ...]:
        return ("sudo", "-n") if self.sudo else ()

    def program(self, name: str) -> str:
        return self.rsync if name == "rsync" else name

    def rsync_path(self) -> str:
        return f"sudo -n {self.rsync}" if self.sudo else self.rsync

    def gate_requests_for(
        self, source: str, tree: Tree, find: Sequence[str | Param]
    ) -> list[GateRequest]:
        """What a tree source asks of a gated droplet (decision 0022): rsync reading
        ``tree`` through ``rrsync -ro``, the hooks, and (a tree read as the login) which
        of its files the login may not read, with ``find`` (unreadable_argv's)."""
        requests = [
            GateRequest(f"{source}: read the tree", tree=tree),
            *hook_requests(source, self.before, self.after),
        ]
        if not self.sudo:
            requests.append(GateRequest(f"{source}: files the login may not read", tuple(find)))
        return requests

    def transfer(self, item: str, path: str) -> TreeTransfer:
        return TreeTransfer(
            item=item,
            path=path,
            excludes=self.excludes,
            rsync_path=self.rsync_path(),
            programs=(self.rsync,),
            sudo=self.sudo,
            before=self.before,
            after=self.after,
            hook_timeout=self.hook_timeout,
        )


class DirectoryOptions(TreeOptions):
    path: str  # absolute path on the droplet

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not PurePosixPath(value).is_absolute():
            raise ValueError("must be an absolute path on the droplet")
        return value.rstrip("/") or "/"


class Directory:
    name = "directory"
    options_model = DirectoryOptions

    def plan(self, options: DirectoryOptions, remote: RemoteShell) -> Sequence[Unit]:
        return [options.transfer(PurePosixPath(options.path).name or "root", options.path)]

    def hold(
        self, options: DirectoryOptions, stream: DumpStream, remote: RemoteShell
    ) -> AbstractContextManager[Held]:
        return nothing_held()

    def vanished(self, options: DirectoryOptions, unit: Unit, remote: RemoteShell) -> bool:
        return path_gone(remote, options.remote_prefix(), options.path)

    def gate_requests(self, options: DirectoryOptions, source: str) -> list[GateRequest]:
        """Besides the tree (TreeOptions.gate_requests_for): whether it is gone."""
        tree = Tree(path=options.path, sudo=options.sudo, rrsync=options.rrsync)
        gone = (*options.remote_prefix(), "test", "-e", options.path)
        return [
            *options.gate_requests_for(source, tree, unreadable_argv(options.path)),
            GateRequest(f"{source}: is the tree gone", gone),
        ]

    def droplet_setup(self, options: DirectoryOptions, source: str, login: str) -> list[str]:
        return []  # the login reads what it backs up: the operator's to grant


KIND = Directory()
