"""The one small interface every source kind implements, and the registry that finds them.

A kind turns its validated options into dump streams: remote commands (argv) whose
stdout is the backup. backupd pulls each stream into its own Borg archive through
``borg create --content-from-command``, so a stream that fails never becomes an
archive. Adding a kind is adding one module here that defines ``KIND``.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from backupd.ssh import RemoteResult


class Options(BaseModel):
    """Base of every kind's options: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


O_contra = TypeVar("O_contra", bound=Options, contravariant=True)


class RemoteShell(Protocol):
    """What a kind may do on the droplet while planning: run short commands."""

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        secrets: Sequence[str] = (),
    ) -> RemoteResult: ...


@dataclass(frozen=True)
class DumpStream:
    item: str  # what the stream holds, e.g. a database name
    filename: str  # the file's name inside the archive
    argv: tuple[str, ...]  # remote command that writes the dump to stdout


class SourceKind(Protocol[O_contra]):
    name: str

    @property
    def options_model(self) -> type[Options]: ...

    def streams(self, options: O_contra, remote: RemoteShell) -> Sequence[DumpStream]:
        """The dumps to pull now; may ask the droplet (e.g. which databases exist)."""
        ...


@cache
def registry() -> dict[str, SourceKind[Any]]:
    """Every kind defined in this package, by name (modules that define ``KIND``)."""
    import jobs

    kinds: dict[str, SourceKind[Any]] = {}
    for info in pkgutil.iter_modules(jobs.__path__):
        module = importlib.import_module(f"jobs.{info.name}")
        kind = getattr(module, "KIND", None)
        if kind is not None:
            kinds[kind.name] = kind
    return kinds


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def slug(item: str) -> str:
    """A name safe for archive names and file names; unique even when characters were lost."""
    cleaned = _UNSAFE.sub("_", item).strip("_")[:48] or "item"
    if cleaned == item:
        return item
    return f"{cleaned}-{hashlib.sha256(item.encode()).hexdigest()[:8]}"
