"""One exception hierarchy for everything backupd can refuse or fail at.

The CLI turns a ``BackupdError`` into one clean line and a non-zero exit code;
the daemon records it in the catalogue. ``transient`` tells the retry policy
whether trying again later can help (a dropped link) or not (a changed host key).
"""

from __future__ import annotations

import re

STDERR_TAIL_BYTES = 2000  # how much of a failed command's stderr is kept


def tail_text(data: bytes, limit: int = STDERR_TAIL_BYTES) -> str:
    """The last ``limit`` bytes of ``data`` as text, trimmed to whole lines where possible."""
    text = data[-limit:].decode("utf-8", errors="replace").strip()
    return text


# the last line of a traceback: "borg.helpers.errors.IntegrityError: Data integrity error: ..."
_RAISED = re.compile(r"(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit)\b:? ")
_TELLING = re.compile(r"error|fatal|fail|killed|denied|refused|not found|no such|cannot|lost", re.I)


def summarize_stderr(tail: str, limit: int = 400) -> str:
    """One line from a stderr tail for a person: the lines that say what went wrong."""
    lines = [line.strip() for line in tail.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    raised = raised_line(lines)
    if raised is not None:  # what was raised says it; a traceback's frames do not
        lines = [raised]
    telling = [line for line in lines if _TELLING.search(line)] or lines[-1:]
    summary = " | ".join(dict.fromkeys(telling[-3:]))
    return summary if len(summary) <= limit else summary[: limit - 1] + "…"


def raised_line(lines: list[str]) -> str | None:
    """The exception line of a Python traceback (Borg's, exit 90) among stripped stderr
    lines; None when they hold no traceback."""
    if not any(line.startswith('File "') for line in lines):
        return None
    raised = [line for line in lines if _RAISED.match(line)]
    return raised[-1] if raised else None


class BackupdError(Exception):
    """Base of every error backupd reports to a person."""

    exit_code = 1
    transient = False  # trying again later may help (the daemon retries)
    stderr_tail = ""  # the tail of a remote or local command's stderr, when one failed

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(BackupdError):
    """The configuration file is missing, unreadable or invalid."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        head = "invalid configuration" if len(problems) != 1 else "invalid configuration:"
        body = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{head}\n{body}" if len(problems) != 1 else f"{head} {problems[0]}")


class UsageError(BackupdError):
    """A command-line argument names something that does not exist or is malformed."""

    exit_code = 2


class CredentialError(BackupdError):
    """The Borg passphrase (or another secret) could not be read safely."""

    exit_code = 3


class HostKeyError(BackupdError):
    """The droplet presented an unknown or changed SSH host key: we refuse to talk to it."""

    exit_code = 4


class MissingProgramError(BackupdError):
    """A program backupd runs on the backup host (borg, rsync, pg_restore, a credential
    command) is not installed there, or not executable."""

    exit_code = 18


class RemoteError(BackupdError):
    """Connecting to a droplet or running a command there failed."""

    exit_code = 5

    def __init__(self, message: str, *, transient: bool = False, stderr_tail: str = "") -> None:
        super().__init__(message)
        self.transient = transient
        self.stderr_tail = stderr_tail


class DumpError(BackupdError):
    """A dump was refused: it failed, was cut off, timed out or was too small."""

    exit_code = 6

    def __init__(self, message: str, *, stderr_tail: str = "", transient: bool = False) -> None:
        super().__init__(message)
        self.stderr_tail = stderr_tail
        self.transient = transient


class ItemsFailed(DumpError):
    """Some items of a source could not be pulled; the others were archived, each a good
    restore point of its own (restore --item). Permanent: the failures were not transient."""

    def __init__(self, failed: list[str], archived: list[str]) -> None:
        kept = f"archived: {', '.join(archived)}" if archived else "nothing archived"
        super().__init__(f"{len(failed)} item(s) not backed up ({kept}): {'; '.join(failed)}")
        self.failed, self.archived = failed, archived


class BorgError(BackupdError):
    """A borg command failed."""

    exit_code = 7

    def __init__(self, message: str, *, returncode: int | None = None, transient: bool = False):
        super().__init__(message)
        self.returncode = returncode
        self.transient = transient


class RepositoryLockedError(BorgError):
    """A Borg lock (a repository's or its cache's) is held by someone backupd does not wait
    for (an operator's borg, another machine, an orphan), or by its own job for longer than
    it waits. The message says who, since when, and how to clear it. Transient: the daemon
    tries again later."""

    exit_code = 16

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class StoreFullError(BorgError):
    """The store's file system has no room for what borg must write (a full disk)."""

    exit_code = 17


class NotFoundError(BackupdError):
    """A host, source or archive that was asked for does not exist."""

    exit_code = 8


class RefusedError(BackupdError):
    """A restore (or other destructive action) was refused to protect existing data."""

    exit_code = 9


class VerificationError(BackupdError):
    """Restored data does not match what was recorded at backup time."""

    exit_code = 10


class StoppedError(BackupdError):
    """A job was stopped before it finished: backupd is shutting down, or went away."""

    exit_code = 11
    transient = True  # the catch-up at the next start runs it again


class WindowClosed(StoppedError):
    """A scheduled off-site copy outside ``[offsite] window``, or stopped at its end: not a
    fault (no alert), not a copy (never counted as one), and not retried: the next night
    goes on from where it stopped."""

    transient = False


class DeadlineError(BackupdError):
    """A job ran past its deadline and was stopped (not retried: it would likely hang again)."""

    exit_code = 12


class CatalogueError(BackupdError):
    """The catalogue cannot be opened or its schema migrated (newer than this backupd, not a
    backupd catalogue, a failed migration): refused without changing it."""

    exit_code = 13


class RestoreError(BackupdError):
    """A restore tool (pg_restore, mariadb, rsync) or its preparation failed."""

    exit_code = 14

    def __init__(self, message: str, *, stderr_tail: str = "") -> None:
        super().__init__(message)
        self.stderr_tail = stderr_tail

    def __str__(self) -> str:
        summary = summarize_stderr(self.stderr_tail)
        return f"{self.message}: {summary}" if summary else self.message


class DeliveryError(BackupdError):
    """A report or an alert could not be delivered (mail or chat); it stays queued in the
    catalogue."""

    exit_code = 15
    transient = True  # the server may be back later: the daemon retries the job


class MailError(DeliveryError):
    """A mail (the weekly report, an alert) could not be delivered; it stays queued."""


class NotifyError(DeliveryError):
    """A chat or push notification (an Apprise URL) was not delivered; the alert stays
    queued for that service."""


class OffsiteError(BackupdError):
    """The off-site copy failed (rclone, the remote, or a copy that does not match)."""

    exit_code = 19
    transient = True  # the remote may answer later: the daemon retries the job
