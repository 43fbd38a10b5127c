"""Judging who holds a Borg lock (real processes, lock files as borg writes them) and what the
adapter does about it (through the one fake execution seam: borg's exit status and words)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backupd.borg.adapter import Borg
from backupd.borg.lock import JOB_ENV, PID_ENV, Verdict, read_holders, repository_lock, this_machine
from backupd.errors import BorgError, RepositoryLockedError
from backupd.local.process import Argv, CommandResult, Invocation

HERE = sorted(this_machine())[0]
FOREIGN = "otherbox@167772161"
Spawn = Callable[..., int]


def write_roster(
    repo: Path, exclusive: list[tuple[str, int]], shared: list[tuple[str, int]], age: float = 0
) -> None:
    """A lock as borg writes it: writers also hold the directory; the roster lists both."""
    repo.mkdir(parents=True, exist_ok=True)
    files = [repo / "lock.roster"]
    files[0].write_text(
        json.dumps(
            {
                "exclusive": [[h, p, 0] for h, p in exclusive],
                "shared": [[h, p, 0] for h, p in shared],
            }
        )
    )
    for host, pid in exclusive:
        (repo / "lock.exclusive").mkdir(exist_ok=True)
        files.append(repo / "lock.exclusive" / f"{host}.{pid}-0")
        files[-1].touch()
    then = time.time() - age
    for f in files:
        os.utime(f, (then, then))


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start ``sleep 600`` with extra environment; every one is stopped afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(**env: str) -> int:
        procs.append(subprocess.Popen(["sleep", "600"], env={**os.environ, **env}))
        return procs[-1].pid

    yield start
    for p in procs:
        p.kill()
        p.wait()


def gone_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_whose_lock_it_is(tmp_path: Path, spawn: Spawn) -> None:
    base = tmp_path / "borg"
    mark = {JOB_ENV: "the backup of web1/db", "BORG_BASE_DIR": str(base)}
    ours = spawn(**mark, **{PID_ENV: str(os.getpid())})
    orphan = spawn(**mark, **{PID_ENV: str(gone_pid())})
    other = spawn(**{**mark, "BORG_BASE_DIR": "/elsewhere"}, **{PID_ENV: str(os.getpid())})
    manual = spawn()
    dead = gone_pid()
    write_roster(
        tmp_path / "r",
        [(HERE, ours)],
        [(HERE, p) for p in (orphan, other, manual, dead)] + [(FOREIGN, 7)],
    )
    verdicts = {h.pid: h.verdict for h in read_holders(repository_lock(tmp_path / "r"), base)}
    assert verdicts == {
        ours: Verdict.OURS,
        orphan: Verdict.ORPHAN,
        other: Verdict.MANUAL,
        manual: Verdict.MANUAL,
        dead: Verdict.STALE,
        7: Verdict.ELSEWHERE,
    }


class LockedRunner:
    """borg failing as it does when its lock wait runs out (exit 73, the lock named)."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.calls: list[Argv] = []

    def __call__(self, argv: Argv, inv: Invocation) -> CommandResult:
        self.calls.append(argv)
        said = f"Failed to create/acquire the lock {self.repo}/lock.exclusive (timeout).\n"
        return CommandResult(argv, 73, b"", said.encode(), 1.0)


def test_a_foreign_holder_fails_at_once_and_borg_waited_one_second(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_roster(repo, [(FOREIGN, 4242)], [], age=41 * 60 + 3)
    runner = LockedRunner(repo)
    borg = Borg("borg", lambda: "secret", tmp_path / "base", runner=runner)
    with pytest.raises(RepositoryLockedError) as exc:
        borg.archive_times(repo)
    assert len(runner.calls) == 1  # no retry for someone else
    assert runner.calls[0][1:4] == ("list", "--lock-wait", "1")
    message = str(exc.value)
    assert message.startswith(
        f"repository {repo} is locked by pid 4242 on another machine (host id {FOREIGN}) since "
    )
    assert "(41m ago)" in message and f"borg break-lock {repo}" in message
    assert exc.value.transient and exc.value.exit_code == 16


def test_a_lock_error_nobody_explains_is_retried_then_reported_as_borgs(tmp_path: Path) -> None:
    runner = LockedRunner(tmp_path / "repo")
    borg = Borg("borg", lambda: "secret", tmp_path / "base", runner=runner)
    with pytest.raises(BorgError) as exc:
        borg.delete(tmp_path / "repo", "a")
    assert not isinstance(exc.value, RepositoryLockedError)
    assert len(runner.calls) == 3 and exc.value.transient
    assert "Failed to create/acquire the lock" in str(exc.value)


def test_a_foreign_read_lock_keeps_writers_out_not_readers(tmp_path: Path, spawn: Spawn) -> None:
    """``borg mount`` (a shared lock) blocks a backup but not a restore."""
    repo = tmp_path / "repo"
    reader = spawn()
    write_roster(repo, [], [(HERE, reader)])
    locks = Borg("borg", lambda: "", tmp_path / "base").locks
    locks.await_free(repo, exclusive=False, wait=600)  # returns: readers share
    with pytest.raises(RepositoryLockedError) as exc:
        locks.await_free(repo, exclusive=True, wait=600)
    assert (
        f"is held open (a shared lock) by pid {reader} on this machine (sleep 600, "
        "not backupd's)" in str(exc.value)
    )


def test_our_own_job_is_waited_for_and_said_once(tmp_path: Path, spawn: Spawn) -> None:
    base = tmp_path / "base"
    ours = spawn(
        **{JOB_ENV: "the prune job of web1", PID_ENV: str(os.getpid()), "BORG_BASE_DIR": str(base)}
    )
    write_roster(tmp_path / "repo", [(HERE, ours)], [])
    borg = Borg("borg", lambda: "", base)
    heard: list[str] = []
    borg.on_wait = heard.append
    with pytest.raises(RepositoryLockedError) as exc:
        borg.locks.await_free(tmp_path / "repo", exclusive=False, wait=1)
    (line,) = heard  # said once, however often it looked again
    where = re.escape(str(tmp_path / "repo"))
    assert re.fullmatch(
        rf"waiting up to \ds for the prune job of web1 \(pid {os.getpid()}\) "
        rf"to finish: it holds the lock of repository {where} \.\.\.",
        line,
    ), line
    assert "is still locked by the prune job of web1" in str(exc.value)
    assert "gave up after waiting" in str(exc.value)
    with pytest.raises(RepositoryLockedError, match="it is backupd's own job"):
        borg.locks.await_free(tmp_path / "repo", exclusive=False, wait=0)  # no patience


def test_a_stale_lock_is_broken_only_when_every_holder_is_gone(
    tmp_path: Path, spawn: Spawn
) -> None:
    calls: list[Argv] = []

    def runner(argv: Argv, inv: Invocation) -> CommandResult:
        calls.append(argv)
        return CommandResult(argv, 0, b"", b"", 0.1)

    locks = Borg("borg", lambda: "", tmp_path / "base", runner=runner).locks
    repo = tmp_path / "repo"
    write_roster(repo, [(HERE, gone_pid())], [(HERE, spawn())])
    assert "not backupd's" in locks.break_stale(repo)[0] and calls == []
    write_roster(repo, [(HERE, gone_pid())], [])
    assert locks.break_stale(repo) == []
    assert [c[1:] for c in calls] == [("break-lock", str(repo))]


def test_a_start_with_nothing_to_reconcile_makes_no_borg_call(tmp_path: Path) -> None:
    """The start-up look at every repository reads lock files only; borg is called (break
    the lock, list and delete the checkpoints) only where a dead process left a lock."""
    from backupd.actions.context import Context
    from backupd.actions.reconcile import reconcile
    from backupd.catalogue import Catalogue
    from jobs.registry import load_config

    calls: list[Argv] = []

    def runner(argv: Argv, inv: Invocation) -> CommandResult:
        calls.append(argv[1:])
        return CommandResult(argv, 0, b'{"archives": []}', b"", 0.1)

    (tmp_path / "pass").write_text("pw\n")
    (tmp_path / "pass").chmod(0o600)
    config = tmp_path / "backupd.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[store]\npath = "{tmp_path / "store"}"\n'
        f'[passphrase]\nfile = "{tmp_path / "pass"}"\n'
        + "".join(
            f'[hosts.{h}]\naddress = "192.0.2.1"\nuser = "b"\nkey = "{tmp_path / "id"}"\n'
            'host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVuaXQtdGVzdC1ub3QtYS1yZWFsLWtleQ"\n'
            for h in ("web1", "web2")
        )
    )
    cfg = load_config(config)
    for host in ("web1", "web2"):  # what Borg.is_repository looks for
        (tmp_path / "store" / host / "data").mkdir(parents=True)
        (tmp_path / "store" / host / "config").write_text("[repository]\n")
    borg = Borg("borg", lambda: "pw", tmp_path / "base", runner=runner)
    ctx = Context.sharing(cfg, Catalogue(cfg.catalogue_url), borg)
    reconcile(ctx)
    assert calls == []
    write_roster(tmp_path / "store" / "web2", [(HERE, gone_pid())], [])  # a killed borg's
    reconcile(ctx)
    repo = str(tmp_path / "store" / "web2")
    assert calls[0] == ("break-lock", repo)
    assert [c[0] for c in calls[1:]] == ["list"] and repo in calls[1]
