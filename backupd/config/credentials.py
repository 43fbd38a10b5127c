"""Reading the Borg passphrase from a credential source, never from argv or the environment.

Three sources: a systemd credential (``LoadCredential=``, read from
``$CREDENTIALS_DIRECTORY``), a file only its owner can read (0600/0400), or a command
that prints it. The secret is read when a borg command needs it and handed to borg on a
pipe (``BORG_PASSPHRASE_FD``); it is never logged or stored.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from backupd.config.load import PassphraseConfig
from backupd.errors import CredentialError, MissingProgramError
from backupd.local.process import Invocation, run_local

COMMAND_TIMEOUT = 60
MAX_SECRET = 4096


def read_passphrase(source: PassphraseConfig) -> str:
    if source.credential is not None:
        secret = _from_credential(source.credential)
    elif source.file is not None:
        secret = _from_file(source.file)
    elif source.command is not None:
        secret = _from_command(source.command)
    else:  # pragma: no cover - the config validator guarantees one source
        raise CredentialError("no passphrase source configured")
    secret = secret.rstrip("\n")
    if not secret:
        raise CredentialError("the Borg passphrase is empty")
    if len(secret) > MAX_SECRET:
        raise CredentialError(f"the Borg passphrase is longer than {MAX_SECRET} characters")
    return secret


def read_secret(source: PassphraseConfig, what: str, *, output_secret: bool = False) -> str:
    """Another secret from a credential source, whole (e.g. ``[notify] urls_from``, one URL
    per line): CredentialError naming ``what``. ``output_secret``: a failing command's
    stderr is left out of the error (it may hold what the command prints)."""
    try:
        if source.credential is not None:
            return _from_credential(source.credential, f"{what}.file")
        if source.file is not None:
            return _from_file(source.file)
        if source.command is not None:
            return _from_command(source.command, show_stderr=not output_secret)
    except CredentialError as e:
        raise CredentialError(f"{what}: {e.message.replace('passphrase ', '', 1)}") from None
    raise CredentialError(f"{what}: no source configured")  # pragma: no cover


def _from_credential(name: str, instead: str = "passphrase.file") -> str:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise CredentialError(
            f"passphrase credential {name!r}: $CREDENTIALS_DIRECTORY is not set "
            f"(run under systemd with LoadCredential=, or use {instead})"
        )
    return _read(Path(directory) / name, check_mode=False)


def _from_file(path: Path) -> str:
    return _read(path, check_mode=True)


def read_secret_file(path: Path) -> str:
    """A secret from a file only its owner may read (e.g. a database password)."""
    secret = _read(path, check_mode=True).rstrip("\n")
    if not secret:
        raise CredentialError(f"secret file {path} is empty")
    return secret


def _read(path: Path, *, check_mode: bool) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise CredentialError(f"passphrase file {path}: {e.strerror}") from None
    with os.fdopen(fd, "r", encoding="utf-8") as f:
        mode = os.fstat(f.fileno()).st_mode
        if check_mode and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CredentialError(
                f"passphrase file {path} is readable by others (mode {stat.S_IMODE(mode):04o}); "
                f"run: chmod 600 {path}"
            )
        return f.read(MAX_SECRET + 2)


def _from_command(argv: tuple[str, ...], *, show_stderr: bool = True) -> str:
    # through the process seam: dies with us, killed at the timeout; its output (the
    # secret) is never logged, only its argv
    try:
        done = run_local(argv, Invocation(timeout=COMMAND_TIMEOUT))
    except MissingProgramError as e:  # not there, not executable
        raise CredentialError(f"passphrase command failed: {e}") from None
    if done.timed_out:
        raise CredentialError(
            f"passphrase command {argv[0]!r} failed: still running after {COMMAND_TIMEOUT:.0f}s"
        )
    if done.exit_status != 0:
        tail = done.stderr.decode(errors="replace").strip()[-300:]
        if not show_stderr:
            raise CredentialError(
                f"passphrase command {argv[0]!r} exited {done.exit_status} "
                "(its error output is not shown: it may hold the secret)"
            )
        raise CredentialError(f"passphrase command {argv[0]!r} exited {done.exit_status}: {tail}")
    return done.stdout.decode("utf-8", errors="strict")
