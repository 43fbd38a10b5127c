from __future__ import annotations

import os
from pathlib import Path

import pytest

from backupd.config.credentials import read_passphrase
from backupd.config.load import PassphraseConfig
from backupd.errors import CredentialError
from backupd.remote.ssh import StreamResult
from backupd.remote.verdict import StreamLimits, judge


def test_passphrase_file_must_be_private(tmp_path: Path) -> None:
    f = tmp_path / "pass"
    f.write_text("s3cret\n")
    os.chmod(f, 0o644)
    with pytest.raises(CredentialError, match="chmod 600"):
        read_passphrase(PassphraseConfig(file=f))
    os.chmod(f, 0o600)
    assert read_passphrase(PassphraseConfig(file=f)) == "s3cret"


def test_passphrase_from_systemd_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "borg").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert read_passphrase(PassphraseConfig(credential="borg")) == "from-systemd"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(CredentialError, match="CREDENTIALS_DIRECTORY"):
        read_passphrase(PassphraseConfig(credential="borg"))


def test_passphrase_from_command_and_its_failure() -> None:
    assert read_passphrase(PassphraseConfig(command=("echo", "pw"))) == "pw"
    with pytest.raises(CredentialError, match="exited 1"):
        read_passphrase(PassphraseConfig(command=("false",)))
    with pytest.raises(CredentialError, match="no-such-vault: not found on the backup host"):
        read_passphrase(PassphraseConfig(command=("no-such-vault", "get")))
    with pytest.raises(CredentialError, match="empty"):
        read_passphrase(PassphraseConfig(command=("true",)))


def spec(min_bytes: int = 10) -> StreamLimits:
    return StreamLimits("web1", 60.0, 10.0, min_bytes, "pg_dump")


def stream(status: int | None, nbytes: int, timed_out: str | None = None) -> StreamResult:
    return StreamResult(
        ("pg_dump",), status, nbytes, "ab" * 32, "pg_dump: error: boom", 1.0, timed_out
    )


@pytest.mark.parametrize(
    ("result", "reason", "transient"),
    [
        (stream(1, 100), "pg_dump exited with status 1", False),
        (stream(None, 100), "connection lost", True),
        (stream(0, 3), "produced 3 bytes, below min_bytes=10", False),
        (stream(None, 100, "deadline"), "60s deadline", True),
        (stream(None, 100, "idle"), "sent nothing for 10s", True),
    ],
)
def test_the_verdict_refuses_every_doubtful_stream(
    result: StreamResult, reason: str, transient: bool
) -> None:
    outcome = judge(spec(), result)
    assert not outcome.ok
    assert reason in outcome.reason
    assert outcome.transient is transient
    assert outcome.stderr_tail == "pg_dump: error: boom"


def test_the_verdict_accepts_a_complete_stream() -> None:
    assert judge(spec(), stream(0, 100)).ok
