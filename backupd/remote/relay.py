"""The command ``borg create --content-from-command`` runs: pull one dump over SSH.

backupd writes a job spec (JSON, mode 0600, no secrets) and borg runs
``python -m backupd.remote.relay SPEC``. The relay streams the remote command's stdout to its
own stdout (borg's input), hashing on the way, and writes what happened to the spec's
``result`` path. It exits 0 only when the remote command exited 0 within its deadline
and sent at least ``min_bytes``: otherwise borg creates no archive.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backupd.errors import BackupdError
from backupd.local.process import signal_when_parent_dies, widen_pipe
from backupd.remote.counters import make_counter, parse_fact_lines
from backupd.remote.ssh import Connection, SSHTarget, StreamResult

EXIT_REFUSED = 3
EX_TEMPFAIL = 75


@dataclass(frozen=True)
class RelaySpec:
    target: SSHTarget
    argv: tuple[str, ...]
    deadline: float
    idle_timeout: float
    min_bytes: int
    result: Path
    stdin_len: int = 0  # bytes to read from our stdin and send to the command (secrets)
    counter: str | None = None  # a stream fact counter (backupd/remote/counters.py)
    tool: str = ""  # the dump tool's name, for messages

    def to_json(self) -> str:
        data = asdict(self)
        data["target"] = target_to_json(self.target)
        data["result"] = str(self.result)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> RelaySpec:
        data: dict[str, Any] = json.loads(text)
        target = target_from_json(data["target"])
        return cls(
            target=target,
            argv=tuple(data["argv"]),
            deadline=float(data["deadline"]),
            idle_timeout=float(data["idle_timeout"]),
            min_bytes=int(data["min_bytes"]),
            result=Path(data["result"]),
            stdin_len=int(data.get("stdin_len", 0)),
            counter=data.get("counter"),
            tool=data.get("tool", ""),
        )


def target_to_json(target: SSHTarget) -> dict[str, Any]:
    data = asdict(target)
    data["key_path"] = str(target.key_path)
    data["known_hosts"] = str(target.known_hosts) if target.known_hosts else None
    return data


def target_from_json(t: dict[str, Any]) -> SSHTarget:
    return SSHTarget(
        label=t["label"],
        address=t["address"],
        port=int(t["port"]),
        user=t["user"],
        key_path=Path(t["key_path"]),
        host_keys=tuple(t["host_keys"]),
        known_hosts=Path(t["known_hosts"]) if t["known_hosts"] else None,
        connect_timeout=float(t["connect_timeout"]),
        pin_file=bool(t.get("pin_file", False)),
        dead_peer_timeout=float(t.get("dead_peer_timeout", 30.0)),
    )


@dataclass(frozen=True)
class RelayOutcome:
    ok: bool
    reason: str  # one line, empty when ok
    nbytes: int = 0
    sha256: str = ""
    exit_status: int | None = None
    stderr_tail: str = ""
    transient: bool = False
    facts: dict[str, Any] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f)

    @classmethod
    def read(cls, path: Path) -> RelayOutcome | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def judge(
    spec: RelaySpec, result: StreamResult, counted: dict[str, Any] | None = None
) -> RelayOutcome:
    """Decide whether a finished stream is a dump we may keep."""
    command = spec.tool or (spec.argv[0] if spec.argv else "command")
    facts = dict(
        nbytes=result.nbytes,
        sha256=result.sha256,
        exit_status=result.exit_status,
        stderr_tail=result.stderr_tail,
        facts={**parse_fact_lines(list(result.fact_lines)), **(counted or {})},
    )
    if result.timed_out == "deadline":
        why = f"{command} still running after its {spec.deadline:.0f}s deadline: stopped"
        return RelayOutcome(False, why, transient=True, **facts)  # type: ignore[arg-type]
    if result.timed_out == "idle":
        why = f"{command} sent nothing for {spec.idle_timeout:.0f}s: stopped"
        return RelayOutcome(False, why, transient=True, **facts)  # type: ignore[arg-type]
    if result.timed_out == "lost":
        why = (
            f"connection to {spec.target.label} lost while {command} was running: {result.lost_why}"
        )
        return RelayOutcome(False, why, transient=True, **facts)  # type: ignore[arg-type]
    if result.exit_status is None:
        why = f"{command}: connection lost or command killed before it finished"
        return RelayOutcome(False, why, transient=True, **facts)  # type: ignore[arg-type]
    if result.exit_status != 0:
        why = f"{command} exited with status {result.exit_status}"
        # EX_TEMPFAIL: the command says a later try may succeed (a copy that stalled)
        transient = result.exit_status == EX_TEMPFAIL
        return RelayOutcome(False, why, transient=transient, **facts)  # type: ignore[arg-type]
    if result.nbytes < spec.min_bytes:
        why = f"{command} produced {result.nbytes} bytes, below min_bytes={spec.min_bytes}"
        return RelayOutcome(False, why, **facts)  # type: ignore[arg-type]
    return RelayOutcome(True, "", **facts)  # type: ignore[arg-type]


def relay(spec: RelaySpec) -> RelayOutcome:
    widen_pipe(1)
    out = sys.stdout.buffer
    stdin = sys.stdin.buffer.read(spec.stdin_len) if spec.stdin_len else None
    counter = make_counter(spec.counter)

    def sink(chunk: bytes) -> None:
        out.write(chunk)
        if counter is not None:
            counter.feed(chunk)

    try:
        with Connection(spec.target) as conn:
            result = conn.stream(
                spec.argv,
                sink,
                deadline=spec.deadline,
                idle_timeout=spec.idle_timeout,
                stdin=stdin,
            )
        out.flush()
    except BackupdError as e:
        return RelayOutcome(False, str(e), transient=e.transient)
    except BrokenPipeError:
        return RelayOutcome(False, "borg stopped reading the stream")
    return judge(spec, result, counter.facts() if counter else None)


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m backupd.remote.relay SPEC.json", file=sys.stderr)
        return 2
    spec = RelaySpec.from_json(Path(args[0]).read_text())
    # borg's process group gets SIGTERM when a job is stopped: unwind (stopping the remote
    # command over SSH) instead of dying with the dump still running on the droplet; and
    # the same when borg itself goes away (killed with backupd)
    signal.signal(signal.SIGTERM, _stop)
    signal_when_parent_dies(signal.SIGTERM)
    outcome = relay(spec)
    outcome.write(spec.result)
    if not outcome.ok:
        print(f"backupd relay: {outcome.reason}", file=sys.stderr)
        return EXIT_REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main())
