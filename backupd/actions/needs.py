"""What a database dump needs from the server beyond itself (roles, extensions).

Asked before a restore changes anything: what the target lacks is refused with what is
missing and how to get it, unless backupd may create it (``--create-roles``). Drills
always create it in their scratch server, from the same backup's companion dumps (the
PostgreSQL globals), as a person restoring onto a fresh server would. Decision 0016.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backupd.actions.context import Context
from backupd.actions.restore import Tally
from backupd.catalogue import Archive, Check
from backupd.errors import RefusedError, VerificationError
from backupd.remote.shells import CommandShell
from jobs.base import DatabaseKind, DatabaseRestore, Lack, Options


@dataclass(frozen=True)
class Endpoint:
    """Where a database restore goes: the kind that restores it, its options, and a name
    for messages ("restore target staging", "web1")."""

    kind: DatabaseKind[Any]
    options: Options
    where: str


def refuse_lacking(
    ep: Endpoint,
    shell: CommandShell,
    a: Archive,
    req: DatabaseRestore,
    create: bool,
    label: str,
) -> tuple[Lack, ...]:
    """What the target lacks that backupd will create (``create``); RefusedError naming
    everything else it lacks, and how to get it. ``label`` is HOST/SOURCE."""
    lacks = ep.kind.lacks(ep.options, shell, req)
    refused = [x for x in lacks if not x.creatable or not create]
    if refused:
        hows = "; ".join(dict.fromkeys(x.how for x in refused)).replace("HOST/SOURCE", label)
        raise RefusedError(
            f"{ep.where} lacks what {a.item!r} needs from outside the database: "
            f"{', '.join(x.what for x in refused)}; {hows}"
        )
    return tuple(lacks)


def provide(
    ctx: Context,
    host: str,
    source: str,
    ep: Endpoint,
    shell: CommandShell,
    a: Archive,
    req: DatabaseRestore,
) -> list[Check]:
    """Create on the target what the dump needs and backupd may create: checks saying what."""
    return ep.kind.provide(ep.options, shell, req, companions(ctx, host, source, ep, a))


def companions(ctx: Context, host: str, source: str, ep: Endpoint, a: Archive) -> dict[str, bytes]:
    """The kind's companion dumps (item -> bytes) from the same backup run as ``a``, each
    read back whole and checked against its recorded sha256. One that is not there (not
    pulled, pruned) is left out: the kind says what it could not take from it."""
    wanted = set(ep.kind.companion_items())
    if not wanted or a.run_id is None:
        return {}
    found: dict[str, bytes] = {}
    for other in ctx.catalogue.archives(host, source):
        if (
            other.run_id != a.run_id
            or other.item not in wanted
            or other.item in found
            or other.pruned_at is not None
        ):
            continue
        tally, parts = Tally(), list[bytes]()

        def keep(chunk: bytes, tally: Tally = tally, parts: list[bytes] = parts) -> None:
            tally(chunk)
            parts.append(chunk)

        # from ``a``'s repository: one run writes one repository, and a drill of the
        # off-site copy reads the copy (``a``), not the local one the catalogue names
        ctx.borg.extract_stream(Path(a.repository), other.name, other.filename, keep)
        if (wrong := tally.differs(other)) is not None:
            raise VerificationError(
                f"{other.name}: read back, it does not match the catalogue {wrong}"
            )
        found[other.item] = b"".join(parts)
    return found
