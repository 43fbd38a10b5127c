"""``[offsite]``: the second copy of the store, off the backup host (issue 18, decision
0028). Validated by backupd.config.load, which re-exports the models."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from pydantic import Field, field_validator

from backupd.config.sections import Model, PassphraseConfig
from backupd.config.units import Duration

# a remote's name: it names the copy in status, metrics and the catalogue
REMOTE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# rclone's --bwlimit: "10M", "10M:1M" (up:down), "off", a timetable "01:00,10M 07:00,off"
# or "Mon-00:00,512k"; rclone itself says what it does not take
WINDOW = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]):([0-5][0-9])$")
BANDWIDTH = re.compile(r"^(?=.*([0-9]|off))[A-Za-z0-9.:,\- ]+$")


class RemoteConfig(Model):
    """One off-site copy: a path on an rclone remote. The remote's settings, secrets
    included (an S3 key pair...), are the body of an rclone config section read from a
    credential source: never in this file, argv, the environment or the log."""

    path: str  # bucket and prefix: "backupd-try/fleet"
    rclone: PassphraseConfig  # file (0600), credential or command; its text: "type = s3\n..."

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        parts = value.strip("/").split("/")
        if not value.strip("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError('a bucket and prefix such as "backupd-try/fleet", no "..", no "//"')
        return value.strip("/")


class OffsiteConfig(Model):
    """Where the store is copied each day (``[maintenance] offsite``), how deletions are
    held back, and how much of each copy is read back."""

    remotes: Mapping[str, RemoteConfig]
    trash_days: int = Field(default=30, ge=1)  # replaced or deleted objects kept this long
    bandwidth: str = ""  # rclone --bwlimit ("10M", "01:00,10M 07:00,off"); "" no limit
    verify_files: int = Field(default=8, ge=0)  # files per repository read back and compared
    timeout: Duration = 12 * 3600.0  # one repository's copy to one remote
    # rclone's tries of the whole sync (--retries), and 2 x - 1 of each request; 1: none
    retries: int = Field(default=3, ge=1)
    window: str = ""  # "01:00-07:00" (UTC): scheduled copies run only then; "" any time
    # a repository that lost more than this share of its copy's bytes is not copied until
    # the operator accepts it (a mass deletion would go into the trash, then be purged)
    max_shrink: float = Field(default=0.5, gt=0, le=1)

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        found = WINDOW.match(value.replace(" ", ""))
        if value and (found is None or found.group(1, 2) == found.group(3, 4)):
            raise ValueError('"HH:MM-HH:MM" in UTC, as the schedules: "01:00-07:00", "22:00-05:30"')
        return value.replace(" ", "")

    def time_left(self, now: datetime) -> float | None:
        """Seconds until the window ends if ``now`` (UTC) is inside it, 0 if outside,
        None without a window. A window may span midnight ("22:00-05:30")."""
        found = WINDOW.match(self.window)
        if found is None:
            return None
        h1, m1, h2, m2 = (int(g) for g in found.groups())
        start, end, at = h1 * 60 + m1, h2 * 60 + m2, now.hour * 60 + now.minute
        length = (end - start) % 1440
        into = (at - start) % 1440
        if into >= length:
            return 0.0
        return (length - into) * 60.0 - now.second - now.microsecond / 1e6

    @field_validator("remotes")
    @classmethod
    def _names(cls, value: Mapping[str, RemoteConfig]) -> Mapping[str, RemoteConfig]:
        if not value:
            raise ValueError("name at least one remote: [offsite.remotes.NAME]")
        for name in value:
            if not REMOTE_NAME.match(name):
                raise ValueError(f"remote name {name!r}: lower-case letters, digits, - and _")
        return value

    @field_validator("bandwidth")
    @classmethod
    def _bandwidth(cls, value: str) -> str:
        if value and not BANDWIDTH.match(value):
            raise ValueError('rclone --bwlimit form: "10M", "10M:1M" or "01:00,10M 07:00,off"')
        return value


def resolve_offsite(body: object, base: Path) -> object:
    """``[offsite]`` as read, with each remote's ``rclone.file`` relative to ``base``."""
    if not isinstance(body, dict) or not isinstance(body.get("remotes"), dict):
        return body
    remotes = {}
    for name, remote in body["remotes"].items():
        source = remote.get("rclone") if isinstance(remote, dict) else None
        if isinstance(source, dict) and isinstance(source.get("file"), str):
            path = Path(source["file"]).expanduser()
            remote = {**remote, "rclone": {**source, "file": str(base / path)}}
        remotes[name] = remote
    return {**body, "remotes": remotes}
