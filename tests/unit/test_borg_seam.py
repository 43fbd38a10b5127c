"""The Borg adapter through a fake of the one execution seam: the passphrase path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backupd.borg.adapter import Borg
from backupd.errors import BorgError
from backupd.local.process import Argv, CommandResult, Invocation

SECRET = "correct horse battery staple"


class FakeRunner:
    def __init__(self, returncode: int = 0, stderr: bytes = b"") -> None:
        self.calls: list[tuple[Argv, Invocation, str]] = []
        self.returncode = returncode
        self.stderr = stderr

    def __call__(self, argv: Argv, inv: Invocation) -> CommandResult:
        assert inv.env is not None
        fd = int(inv.env["BORG_PASSPHRASE_FD"])
        assert fd in inv.pass_fds
        seen = os.read(fd, 4096).decode()
        self.calls.append((argv, inv, seen))
        return CommandResult(argv, self.returncode, b"{}", self.stderr, 0.1)


def test_passphrase_goes_by_fd_never_argv_or_env(tmp_path: Path) -> None:
    runner = FakeRunner()
    borg = Borg("borg", lambda: SECRET, tmp_path / "base", runner=runner)
    borg.run(("list", "--json", "/repo"))
    argv, inv, seen = runner.calls[0]
    assert seen == SECRET
    assert SECRET not in " ".join(argv)
    assert inv.env is not None
    assert all(SECRET not in v for v in inv.env.values())
    assert "BORG_PASSPHRASE" not in inv.env
    assert inv.env["BORG_EXIT_CODES"] == "modern"
    assert SECRET in inv.secrets  # so the seam masks it if it ever appears
    assert oct((tmp_path / "base").stat().st_mode & 0o777) == "0o700"


def test_the_pipe_is_closed_after_the_command(tmp_path: Path) -> None:
    runner = FakeRunner()
    Borg("borg", lambda: SECRET, tmp_path, runner=runner).run(("info", "/r"))
    fd = int(runner.calls[0][1].env["BORG_PASSPHRASE_FD"])  # type: ignore[index]
    with pytest.raises(OSError):
        os.fstat(fd)


def test_lock_timeout_is_transient_and_message_has_borgs_words(tmp_path: Path) -> None:
    runner = FakeRunner(returncode=73, stderr=b"Failed to create/acquire the lock /r/lock")
    with pytest.raises(BorgError) as exc:
        Borg("borg", lambda: SECRET, tmp_path, runner=runner).run(("create", "x"))
    assert exc.value.transient
    assert "exit 73" in str(exc.value) and "acquire the lock" in str(exc.value)


def test_other_failures_are_permanent(tmp_path: Path) -> None:
    runner = FakeRunner(returncode=52, stderr=b"passphrase supplied is incorrect")
    with pytest.raises(BorgError) as exc:
        Borg("borg", lambda: SECRET, tmp_path, runner=runner).run(("list", "/r"))
    assert not exc.value.transient
