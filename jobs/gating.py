"""What a kind asks of a gated droplet, as the gate's allowlist holds it (decision 0022).

A kind lists its requests as templates: the argv it runs, with the parts that vary night
to night (a database name, a snapshot id) as typed parameters the gate validates. The
gate (backupd/remote/droplet_gate.py) runs a request only if it matches one of them, and runs its
own rendering of the template. These objects turn into the allowlist's JSON here.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

# the gate's PARAM_TYPES
ParamType = Literal["any", "choice", "pg_dbname", "pg_snapshot", "psql_var", "tmpfile", "tree"]


@dataclass(frozen=True)
class Tree:
    """A tree the gate lets rsync read, with ``rrsync -ro``: at ``path``, or where the
    droplet's ``inspect`` command says (a Docker volume's mountpoint)."""

    path: str | None = None
    inspect: tuple[str, ...] | None = None
    sudo: bool = False
    rrsync: str = "rrsync"
    write: bool = False  # a restore writes into it (rrsync -wo), instead of reading (-ro)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = (
            {"path": self.path} if self.path else {"inspect": list(self.inspect or ())}
        )
        if self.sudo:
            out["sudo"] = True
        if self.write:
            out["write"] = True
        out["rrsync"] = self.rrsync
        return out


@dataclass(frozen=True)
class Param:
    """A value the gate validates; ``values`` None: any value of the type."""

    name: str
    type: ParamType
    values: tuple[str, ...] | None = None
    flag: str | None = None  # given as two arguments: the flag, then the value
    optional: bool = False
    tree: Tree | None = None  # type "tree": the value is this tree's directory + suffix
    suffix: str = ""
    var: str | None = None  # type "psql_var": the variable's name (--set NAME=VALUE)
    prefixes: tuple[str, ...] = ()  # with values: also names that start with one and "_"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"param": self.name, "type": self.type}
        if self.var is not None:
            out["var"] = self.var
        if self.values is not None:
            out["values"] = list(self.values)
        if self.prefixes:
            out["prefixes"] = list(self.prefixes)
        if self.tree is not None:
            out["tree"] = self.tree.to_json()
            out["suffix"] = self.suffix
        if self.flag:
            out["flag"] = self.flag
        if self.optional:
            out["optional"] = True
        return out


@dataclass(frozen=True)
class Session:
    """What a held session may be sent (the gate's SessionFilter): ``first`` before
    anything, then these statements byte for byte, and with ``pg_counts`` one-table row
    counts."""

    messages: tuple[str, ...]
    pg_counts: bool = False
    first: str | None = None  # must come before anything else (then never again)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"messages": sorted(set(self.messages))}
        if self.pg_counts:
            out["counts"] = "pg"
        if self.first is not None:
            out["first"] = [self.first]
        return out


@dataclass(frozen=True)
class GateRequest:
    """One request of the allowlist: ``name`` is what syslog says the gate ran; ``argv``
    a command's template, or ``tree`` a tree rsync may read (then ``argv`` is empty).
    Without a ``session`` the program's stdin is /dev/null, unless ``stdin_passes`` (a
    restore's tool reading the dump)."""

    name: str
    argv: tuple[str | Param, ...] = ()
    session: Session | None = None
    tree: Tree | None = None
    stdin_passes: bool = False

    def to_json(self) -> dict[str, Any]:
        if self.tree is not None:
            return {"name": self.name, "tree": self.tree.to_json()}
        out: dict[str, Any] = {
            "name": self.name,
            "argv": [a if isinstance(a, str) else a.to_json() for a in self.argv],
        }
        if self.session is not None:
            out["stdin"] = "session"
            out["session"] = self.session.to_json()
        elif self.stdin_passes:
            out["stdin"] = "pass"
        return out


@dataclass(frozen=True)
class RestoreGate:
    """How a database kind restores onto a gated droplet (decision 0022): the ``options``
    it runs with there (its restore role), the restore key's ``requests`` for it, and the
    ``setup`` lines `backupctl host setup` runs as root to make that role."""

    options: Any
    requests: tuple[GateRequest, ...]
    setup: tuple[str, ...]


def requests_json(requests: Sequence[GateRequest]) -> list[dict[str, Any]]:
    """The allowlist's requests, each once, in a stable order."""
    seen: dict[str, dict[str, Any]] = {}
    for request in requests:
        as_json = request.to_json()
        kept = seen.setdefault(repr(as_json.get("argv", as_json.get("tree"))), as_json)
        if kept is not as_json and "session" in as_json:  # the gate runs the first match:
            session = kept.setdefault("session", {"messages": []})  # it must hold both
            other = as_json["session"]
            session["messages"] = sorted({*session["messages"], *other["messages"]})
            if "first" in other:
                session["first"] = sorted({*session.get("first", []), *other["first"]})
            if as_json["session"].get("counts"):
                session["counts"] = as_json["session"]["counts"]
            kept["stdin"] = "session"
    return sorted(seen.values(), key=lambda r: (r["name"], repr(r.get("argv", r.get("tree")))))


def hook_requests(
    source: str, before: Sequence[str] | None, after: Sequence[str] | None
) -> list[GateRequest]:
    """The before/after commands a source's config names, as they are."""
    hooks = (("before", before), ("after", after))
    return [GateRequest(f"{source}: {when} command", tuple(argv)) for when, argv in hooks if argv]


def say(text: str) -> str:
    """A line of `backupctl host setup`'s script that tells the operator ``text``."""
    return f"say {shlex.quote(text)}"
