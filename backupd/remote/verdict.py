"""Whether a dump stream that came over SSH may be kept: the verdict behind the gate.

A stream is kept only when the remote command exited 0 within its deadline, never stalled
past its idle timeout, kept its connection, and sent at least ``min_bytes``. Anything
else is refused with one line saying why; ``transient`` says a later try may succeed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backupd.remote.counters import parse_fact_lines

if TYPE_CHECKING:
    from backupd.remote.ssh import StreamResult

EX_TEMPFAIL = 75


@dataclass(frozen=True)
class StreamLimits:
    """What a stream must meet: ``label`` names the droplet in messages, ``tool`` the
    dump program; seconds for the deadline and the idle timeout."""

    label: str
    deadline: float
    idle_timeout: float
    min_bytes: int
    tool: str


@dataclass(frozen=True)
class StreamVerdict:
    ok: bool
    reason: str  # one line, empty when ok
    nbytes: int = 0
    sha256: str = ""
    exit_status: int | None = None
    stderr_tail: str = ""
    transient: bool = False
    facts: dict[str, Any] = field(default_factory=dict)


def judge(
    spec: StreamLimits, result: StreamResult, counted: dict[str, Any] | None = None
) -> StreamVerdict:
    """Decide whether a finished stream is a dump we may keep."""
    command = spec.tool or (result.argv[0] if result.argv else "command")
    facts = dict(
        nbytes=result.nbytes,
        sha256=result.sha256,
        exit_status=result.exit_status,
        stderr_tail=result.stderr_tail,
        facts={**parse_fact_lines(list(result.fact_lines)), **(counted or {})},
    )
    if result.timed_out == "deadline":
        why = f"{command} still running after its {spec.deadline:.0f}s deadline: stopped"
        return StreamVerdict(False, why, transient=True, **facts)  # type: ignore[arg-type]
    if result.timed_out == "idle":
        why = f"{command} sent nothing for {spec.idle_timeout:.0f}s: stopped"
        return StreamVerdict(False, why, transient=True, **facts)  # type: ignore[arg-type]
    if result.timed_out == "lost":
        why = f"connection to {spec.label} lost while {command} was running: {result.lost_why}"
        return StreamVerdict(False, why, transient=True, **facts)  # type: ignore[arg-type]
    if result.exit_status is None:
        why = f"{command}: connection lost or command killed before it finished"
        return StreamVerdict(False, why, transient=True, **facts)  # type: ignore[arg-type]
    if result.exit_status != 0:
        why = f"{command} exited with status {result.exit_status}"
        # EX_TEMPFAIL: the command says a later try may succeed (a copy that stalled)
        transient = result.exit_status == EX_TEMPFAIL
        return StreamVerdict(False, why, transient=transient, **facts)  # type: ignore[arg-type]
    if result.nbytes < spec.min_bytes:
        why = f"{command} produced {result.nbytes} bytes, below min_bytes={spec.min_bytes}"
        return StreamVerdict(False, why, **facts)  # type: ignore[arg-type]
    return StreamVerdict(True, "", **facts)  # type: ignore[arg-type]
