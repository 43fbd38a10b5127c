"""The off-site copy's configuration, its rclone settings file and the pieces of the job
that need no server (issue 18); the copy itself runs against a real S3 server in
tests/e2e/test_offsite.py. Only the process seam (a Remote's runner) is faked."""

from __future__ import annotations

import json
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backupd.actions.check import _window
from backupd.actions.context import Context
from backupd.actions.maintain import jobs_for, run_maintenance, schedule_of
from backupd.actions.status import offsite_rows
from backupd.borg.adapter import Borg
from backupd.catalogue.models import utcnow
from backupd.config.load import OffsiteConfig, RemoteConfig
from backupd.config.sections import PassphraseConfig
from backupd.errors import BackupdError, ConfigError, OffsiteError, WindowClosed
from backupd.local.process import Argv, CommandResult, Invocation
from backupd.remote.rclone import open_remote, reason
from jobs.base import MaintenanceEnv
from jobs.offsite import JOB as OFFSITE
from jobs.offsite import _stats, _sync, _within, expire_trash, not_shrunk
from jobs.registry import load_config
from tests.harness.example_report import write_config

SECTION = "type = s3\nprovider = Other\naccess_key_id = AKID\nsecret_access_key = S3cretKey99\n"


def offsite(tmp_path: Path, body: str) -> Path:
    return write_config(tmp_path, {"web1": {"app": "sqlite"}}, body)


def section_file(tmp_path: Path, text: str = SECTION) -> Path:
    path = tmp_path / "eu.conf"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_a_remote_reads_its_settings_from_a_private_file_relative_to_the_config(
    tmp_path: Path,
) -> None:
    section_file(tmp_path)
    body = '[offsite]\n[offsite.remotes.eu]\npath = "/bucket/fleet/"\nrclone = { file = "eu.conf" }'
    config = load_config(offsite(tmp_path, body))
    assert config.offsite is not None
    remote = config.offsite.remotes["eu"]
    assert remote.path == "bucket/fleet" and remote.rclone.file == tmp_path / "eu.conf"
    assert (config.offsite.trash_days, config.offsite.verify_files) == (30, 8)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("[offsite]\nremotes = {}", "name at least one remote"),
        ('[offsite.remotes.EU]\npath = "b"\nrclone = { file = "x" }', "remote name 'EU'"),
        ('[offsite.remotes.eu]\npath = "b/../c"\nrclone = { file = "x" }', 'no ".."'),
        ('[offsite.remotes.eu]\npath = "b"', "offsite.remotes.eu.rclone"),
        (
            '[offsite]\nbandwidth = "fast"\n'
            '[offsite.remotes.eu]\npath = "b"\nrclone = { file = "x" }',
            "rclone --bwlimit form",
        ),
        ('[offsite.remotes.eu]\npath = "b"\nrclone = { file = "x" }\nbucket = "y"', "unknown"),
    ],
)
def test_offsite_mistakes_are_one_line_each(tmp_path: Path, body: str, said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        load_config(offsite(tmp_path, body))


def test_the_offsite_job_is_planned_only_with_an_offsite_table(tmp_path: Path) -> None:
    without = Context(load_config(offsite(tmp_path, "")))
    assert not [job for job, _ in jobs_for(without) if job.startswith("offsite")]
    section_file(tmp_path)
    body = '[offsite.remotes.eu]\npath = "b"\nrclone = { file = "eu.conf" }'
    with_it = Context(load_config(offsite(tmp_path, body)))
    assert ("offsite", "web1") in jobs_for(with_it)
    # the catalogue's repository and the key bundle go once, on the hosts' crontab line
    assert ("offsite_catalogue", None) in jobs_for(with_it)
    assert schedule_of("offsite_catalogue") == schedule_of("offsite") == "offsite"
    assert schedule_of("prune") == "prune"


def test_the_settings_file_is_private_lives_only_inside_the_block_and_hides_secrets(
    tmp_path: Path,
) -> None:
    cfg = RemoteConfig(path="bucket/fleet", rclone=PassphraseConfig(file=section_file(tmp_path)))
    work = tmp_path / "work"
    with open_remote("eu", cfg, work) as remote:
        conf = remote.config_file
        assert conf.read_text() == "[eu]\n" + SECTION
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600
        assert stat.S_IMODE(conf.parent.stat().st_mode) == 0o700
        assert remote.secrets == ("AKID", "S3cretKey99")  # the key pair: both masked
        assert remote.url("web1", "data") == "eu:bucket/fleet/web1/data"
        assert remote.scrub("denied for S3cretKey99") == "denied for ***"
    assert not conf.exists()
    with pytest.raises(RuntimeError), open_remote("eu", cfg, work) as remote:
        conf = remote.config_file
        raise RuntimeError("the copy failed")
    assert not conf.exists()  # also after a failure


def test_secrets_in_key_colon_value_form_are_masked_and_a_pasted_header_is_refused(
    tmp_path: Path,
) -> None:
    path = section_file(tmp_path, "type: s3\nsecret_access_key: Colon5ecret\n")
    cfg = RemoteConfig(path="b", rclone=PassphraseConfig(file=path))
    with open_remote("eu", cfg, tmp_path / "work") as remote:
        assert remote.secrets == ("Colon5ecret",)
    section_file(tmp_path, "[myremote]\n" + SECTION)
    with (
        pytest.raises(OffsiteError, match=r"remove the \[section\] line"),
        open_remote("eu", cfg, tmp_path / "work"),
    ):
        pass


def test_a_settings_file_left_by_a_killed_copy_is_removed_at_the_next(tmp_path: Path) -> None:
    """A SIGKILL runs no cleanup: the next use removes what nobody holds, and leaves the
    file of a copy still running."""
    cfg = RemoteConfig(path="b", rclone=PassphraseConfig(file=section_file(tmp_path)))
    work = tmp_path / "work"
    left = work / "rclone-killed"
    left.mkdir(parents=True)
    (left / "in-use").touch()
    (left / "rclone.conf").write_text("[eu]\n" + SECTION)
    with open_remote("eu", cfg, work) as running:
        with open_remote("eu", cfg, work) as second:
            assert running.config_file.exists()  # in use: kept
            assert second.config_file != running.config_file
        assert not left.exists()


def test_a_section_without_a_type_is_refused_without_saying_its_secrets(tmp_path: Path) -> None:
    path = section_file(tmp_path, "secret_access_key = S3cretKey99\n")
    cfg = RemoteConfig(path="b", rclone=PassphraseConfig(file=path))
    with (
        pytest.raises(OffsiteError, match=r"no 'type = \.\.\.' line") as refused,
        open_remote("eu", cfg, tmp_path / "work"),
    ):
        pass
    assert "S3cretKey99" not in str(refused.value)


class Seam:
    """The process seam of a Remote: answers rclone's listing, records the rest."""

    def __init__(self, listing: str) -> None:
        self.listing, self.calls = listing, list[Argv]()

    def __call__(self, argv: Argv, inv: Invocation) -> CommandResult:
        self.calls.append(argv)
        out = self.listing.encode() if "lsf" in argv else b""
        return CommandResult(argv, 0, out, b"", 0.1)


def test_trash_older_than_its_days_is_removed_and_nothing_else(tmp_path: Path) -> None:
    cfg = RemoteConfig(path="b/fleet", rclone=PassphraseConfig(file=section_file(tmp_path)))
    listing = "2026-11-01T061500Z/\n2026-11-28T061500Z/\nnot-ours/\n"
    seam = Seam(listing)
    with open_remote("eu", cfg, tmp_path / "work", runner=seam) as remote:
        now = datetime(2026, 11, 30, 6, 15, tzinfo=UTC)
        assert expire_trash(remote, 7, now) == 1
    purged = [argv[-1] for argv in seam.calls if "purge" in argv]
    assert purged == ["eu:b/fleet/.trash/2026-11-01T061500Z"]


def test_the_read_back_stays_within_its_budget_but_reads_one_segment_at_least(
    tmp_path: Path,
) -> None:
    sizes = {"a": 300, "b": 300, "c": 100, "d": 900}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(b"x" * size)
    paths = [tmp_path / n for n in sizes]
    assert [p.name for p in _within(paths, 500)] == ["a", "c"]
    assert [p.name for p in _within(paths[3:], 500)] == ["d"]  # one, however big


def test_rclones_closing_statistics_are_added_up_over_its_steps() -> None:
    log = (
        b'{"level":"info","msg":"Copied (new)","object":"data/0/3"}\n'
        b'{"level":"notice","msg":"\\nTransferred: 3 MiB","stats":{"bytes":3145728,'
        b'"transfers":7,"serverSideMoves":2,"speed":1.5,"eta":null,"fatalError":false}}\n'
        b'{"level":"notice","msg":"\\nTransferred: 1 KiB","stats":{"bytes":1024,'
        b'"transfers":1,"serverSideMoves":0,"speed":0}}\n'
    )
    assert _stats(log) == {"bytes": 3146752, "transfers": 8, "serverSideMoves": 2, "speed": 1}
    assert _stats(b"no statistics at all") == {}


class Answers:
    """The process seam answering ``rclone cat`` as a remote would: an object, nothing (a
    missing object in a bucket), a missing bucket, or a refused connection."""

    def __init__(self, status: int, out: bytes = b"", err: bytes = b"") -> None:
        self.status, self.out, self.err = status, out, err
        self.calls: list[Argv] = []

    def __call__(self, argv: Argv, inv: Invocation) -> CommandResult:
        self.calls.append(argv)
        return CommandResult(argv, self.status, self.out, self.err, 0.1)


@pytest.mark.parametrize(
    ("answer", "copied_before"),
    [
        (Answers(0, b'{"repository_id": "abc123"}'), "abc123"),
        (Answers(0), None),  # rclone cats nothing for a missing object
        (Answers(3, err=b"NOTICE: Failed to cat: directory not found"), None),  # no bucket
    ],
)
def test_a_copy_is_told_from_no_copy_yet(
    tmp_path: Path, answer: Answers, copied_before: str | None
) -> None:
    cfg = RemoteConfig(path="b/fleet", rclone=PassphraseConfig(file=section_file(tmp_path)))
    with open_remote("eu", cfg, tmp_path / "work", runner=answer, retries=2) as remote:
        found = remote.cat_if_there(".manifests", "web1.json")
    assert (found and json.loads(found)["repository_id"]) == (copied_before or None)
    [argv] = answer.calls
    assert argv[3:5] == ("--low-level-retries", "3")  # 2 x retries - 1, every request


def test_a_remote_that_cannot_be_read_is_no_missing_copy(tmp_path: Path) -> None:
    """Found by the JSON contract test: with the remote down, the manifest read counted as
    "no copy yet" and the run went on into a sync that failed again, minutes later (and,
    with rclone's default tries, a listing took over two minutes to fail). Now the first
    read fails the run, saying why. Another member: a refused key."""
    cfg = RemoteConfig(path="b/fleet", rclone=PassphraseConfig(file=section_file(tmp_path)))
    for err in (
        b"ERROR : dial tcp 127.0.0.1:9000: connect: connection refused",
        b"ERROR : operation error S3: ListObjects, StatusCode: 403, InvalidAccessKeyId",
    ):
        answer = Answers(1, err=err)
        with (
            open_remote("eu", cfg, tmp_path / "work", runner=answer) as remote,
            pytest.raises(OffsiteError, match=r"remote eu: reading \.manifests/web1\.json failed"),
        ):
            remote.cat_if_there(".manifests", "web1.json")


@pytest.mark.parametrize(
    ("window", "at", "left"),
    [
        ("01:00-07:00", (6, 30, 0), 1800.0),
        ("01:00-07:00", (7, 0, 0), 0.0),  # the end is outside
        ("01:00-07:00", (1, 0, 0), 6 * 3600.0),  # the start is inside
        ("01:00-07:00", (12, 0, 0), 0.0),
        ("22:00-05:30", (23, 59, 30), 5.5 * 3600 + 30),  # over midnight
        ("22:00-05:30", (3, 0, 0), 2.5 * 3600),
        ("22:00-05:30", (5, 30, 0), 0.0),
        ("", (12, 0, 0), None),  # no window: any time
    ],
)
def test_the_copy_window_says_how_long_is_left(
    tmp_path: Path, window: str, at: tuple[int, int, int], left: float | None
) -> None:
    cfg = OffsiteConfig(remotes={"eu": remote_cfg(tmp_path)}, window=window)
    assert cfg.time_left(datetime(2026, 11, 30, *at, tzinfo=UTC)) == left


def remote_cfg(tmp_path: Path) -> RemoteConfig:
    return RemoteConfig(path="b/fleet", rclone=PassphraseConfig(file=section_file(tmp_path)))


@pytest.mark.parametrize("window", ["1:00-7:00", "01:00", "07:00-07:00", "25:00-02:00", "night"])
def test_a_window_not_in_hh_mm_form_is_one_line(tmp_path: Path, window: str) -> None:
    section_file(tmp_path)
    body = f'[offsite]\nwindow = "{window}"\n[offsite.remotes.eu]\npath = "b"\n'
    with pytest.raises(ConfigError, match=r"offsite\.window.*HH:MM-HH:MM"):
        load_config(offsite(tmp_path, body + 'rclone = { file = "eu.conf" }'))


class TimedOut:
    """The process seam: borg with-lock (and the rclone under it) stopped at its time
    limit; the limit each command was given."""

    def __init__(self) -> None:
        self.limits: list[float | None] = []

    def __call__(self, argv: Argv, inv: Invocation) -> CommandResult:
        self.limits.append(inv.timeout)
        return CommandResult(argv, None, b"", b"", 0.1, timed_out="deadline")


class Fails:
    """The process seam: borg with-lock ending as it does when rclone under it failed,
    rclone's JSON log (recorded from rclone 1.75) on its stderr."""

    def __init__(self, log: str) -> None:
        self.log = log

    def __call__(self, argv: Argv, inv: Invocation) -> CommandResult:
        return CommandResult(argv, 2, b"", self.log.encode(), 0.1)


GONE = (  # the remote stopped answering (recorded, shortened)
    '{"level":"error","msg":"Failed to copy: operation error S3: ListObjects, exceeded '
    "maximum number of attempts, 1, https response error StatusCode: 0, RequestID: , "
    'HostID: , request send failed, Get \\"http://127.0.0.1:53129/backups\\": dial tcp '
    '127.0.0.1:53129: connect: connection refused","source":"sync/sync.go:1"}\n'
)
STATS = (  # rclone's closing statistics on the same stderr: numbers that say nothing
    '{"level":"notice","msg":"Transferred: 1.403 MiB","stats":{"bytes":1403,"errors":1}}\n'
)
REFUSED = (  # the key refused (recorded, shortened)
    '{"level":"error","msg":"Failed to copy: failed to prepare upload: operation error S3: '
    "CreateBucket, https response error StatusCode: 403, RequestID: , HostID: , api error "
    'SignatureDoesNotMatch: The request signature we calculated does not match"}\n'
)


@pytest.mark.parametrize(
    ("log", "said"),
    [
        (GONE + STATS, "the remote cannot be reached: check endpoint (host and port) (Failed"),
        (REFUSED, "the remote refused the key: check access_key_id and secret_access_key"),
    ],
)
def test_a_copy_step_that_fails_says_what_to_check_as_the_other_paths_do(
    tmp_path: Path, log: str, said: str
) -> None:
    section_file(tmp_path)
    body = '[offsite]\n[offsite.remotes.eu]\npath = "b"\nrclone = { file = "eu.conf" }'
    config = load_config(offsite(tmp_path, body))
    borg = Borg("borg", lambda: "pass", tmp_path / "borg", runner=Fails(log))
    env = MaintenanceEnv(config, borg, None, "web1", tmp_path / "repo", "backupctl")  # type: ignore[arg-type]
    assert config.offsite is not None
    with (
        open_remote("eu", config.offsite.remotes["eu"], tmp_path / "work") as remote,
        pytest.raises(OffsiteError) as failed,
    ):
        _sync(env, remote, ("web1", tmp_path / "repo"), utcnow())
    line = str(failed.value)
    assert line.startswith(f"remote eu: the copy of web1 failed: {said}"), line
    assert "RequestID" not in line and "\n" not in line


@pytest.mark.parametrize(
    ("trigger", "limit", "said"),
    [
        ("schedule", 1800.0, "stopped at the end of [offsite] window 05:00-07:00 UTC"),
        ("backupctl", 12 * 3600.0, "the copy of web1 failed: borg offsite copy to eu timed out"),
    ],
)
def test_a_scheduled_copy_stops_at_the_end_of_its_window_a_copy_by_hand_does_not(
    tmp_path: Path, trigger: str, limit: float, said: str
) -> None:
    section_file(tmp_path)
    body = '[offsite]\nwindow = "05:00-07:00"\n[offsite.remotes.eu]\npath = "b"\n'
    config = load_config(offsite(tmp_path, body + 'rclone = { file = "eu.conf" }'))
    seam = TimedOut()
    borg = Borg("borg", lambda: "pass", tmp_path / "borg", runner=seam)
    env = MaintenanceEnv(config, borg, None, "web1", tmp_path / "repo", trigger)  # type: ignore[arg-type]
    started = datetime(2026, 11, 30, 6, 30, tzinfo=UTC)
    assert config.offsite is not None
    with (
        open_remote("eu", config.offsite.remotes["eu"], tmp_path / "work") as remote,
        pytest.raises(BackupdError, match=re.escape(said)) as stopped,
    ):
        _sync(env, remote, ("web1", tmp_path / "repo"), started)
    # the window's end: an interruption, not retried (the next night goes on); no fault
    assert isinstance(stopped.value, WindowClosed) == (trigger == "schedule")
    assert not stopped.value.transient or trigger != "schedule"
    assert seam.limits[-1] == pytest.approx(limit)


def test_a_scheduled_copy_outside_its_window_copies_nothing_and_warns(tmp_path: Path) -> None:
    section_file(tmp_path)
    now = utcnow()
    closed = f"{(now.hour + 2) % 24:02d}:00-{(now.hour + 3) % 24:02d}:00"  # not now
    body = f'[offsite]\nwindow = "{closed}"\n[offsite.remotes.eu]\npath = "b"\n'
    config = load_config(offsite(tmp_path, body + 'rclone = { file = "eu.conf" }'))
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "config").write_text("[repository]\nid = 1a2b\n")
    seam = TimedOut()
    borg = Borg("borg", lambda: "pass", tmp_path / "borg", runner=seam)
    env = MaintenanceEnv(config, borg, None, "web1", tmp_path / "repo", "schedule")  # type: ignore[arg-type]
    with pytest.raises(WindowClosed, match=f"outside .offsite. window {closed} UTC: not copied"):
        OFFSITE.run(env)
    assert seam.limits == []  # nothing ran
    # config check says so before the first night
    finding = _window(closed, config.offsite.time_left, "15 6 * * *")  # type: ignore[union-attr]
    inside = f"{(now.hour - 1) % 24:02d}:00-{(now.hour + 1) % 24:02d}:00"
    assert _window(inside, lambda _t: 3600.0, "15 6 * * *").ok
    assert finding.ok == bool(config.offsite.time_left(_next_six_fifteen(now)))  # type: ignore[union-attr]


def _next_six_fifteen(now: datetime) -> datetime:
    at = now.replace(hour=6, minute=15, second=0, microsecond=0)
    return at if at > now else at + timedelta(days=1)


@pytest.mark.parametrize(
    ("size", "copied", "max_shrink", "refused"),
    [
        (400, {"bytes": 1000, "copied_at": "2026-11-29T06:15:00+00:00"}, 0.5, True),
        (500, {"bytes": 1000}, 0.5, False),  # exactly half: a big prune may do that
        (999_999, {"bytes": 1000}, 0.5, False),  # grew
        (1, None, 0.5, False),  # no copy yet
        (1, {"bytes": 0}, 0.5, False),  # a copy that recorded nothing
        (0, {"bytes": 1000}, 1.0, False),  # max_shrink = 1: never held back
        (850, {"bytes": 1000}, 0.1, True),  # a tighter rule
    ],
)
def test_a_repository_that_lost_more_than_max_shrink_is_held_back(
    size: int, copied: dict[str, object] | None, max_shrink: float, refused: bool
) -> None:
    if not refused:
        not_shrunk("eu", "web1", size, copied, max_shrink)
        return
    with pytest.raises(OffsiteError, match=r"less than its copy of .*--accept-shrink") as held:
        not_shrunk("eu", "web1", size, copied, max_shrink)
    assert str(held.value).startswith("remote eu: web1 holds ")


def test_a_settings_line_without_its_equals_sign_never_reaches_rclone_nor_any_output(
    tmp_path: Path,
) -> None:
    """Found by a new-user trial: "secret_access_key S3cret..." (the '=' forgotten) was
    not known as a secret, and rclone's "could not parse line: ..." carried it into the
    log, status, the report and the catalogue. Now the line is refused by number before
    rclone runs. Another member: a secret pasted alone on a line."""
    for text in (
        SECTION.replace("secret_access_key = S3cretKey99", "secret_access_key S3cretKey99"),
        SECTION + "S3cretKey99\n",
    ):
        cfg = RemoteConfig(path="b", rclone=PassphraseConfig(file=section_file(tmp_path, text)))
        seam = Answers(0)
        with (
            pytest.raises(OffsiteError, match=r"line \d is not 'key = value'") as refused,
            open_remote("eu", cfg, tmp_path / "work", runner=seam),
        ):
            pass
        assert "S3cretKey99" not in str(refused.value) and seam.calls == []


@pytest.mark.parametrize(
    ("stderr", "said"),
    [
        (
            "2026/11/30 17:55:34 ERROR : error listing: operation error S3: ListObjects, https "
            "response error StatusCode: 403, RequestID: , HostID: , api error "
            "SignatureDoesNotMatch: The request signature we calculated does not match.\n"
            "2026/11/30 17:55:34 NOTICE: Failed to lsf with 2 errors: last error was: error in "
            "ListJSON: operation error S3: ListObjects, https response error StatusCode: 403, "
            "RequestID: , HostID: , api error SignatureDoesNotMatch: The request signature we "
            "calculated does not match.\n",
            "the remote refused the key: check access_key_id and secret_access_key (operation "
            "error S3: ListObjects, StatusCode: 403, api error SignatureDoesNotMatch: The "
            "request signature we calculated does not match.)",
        ),
        (
            '2026/11/30 17:52:58 NOTICE: Failed to cat: Get "http://127.0.0.1:1/b": dial tcp '
            "127.0.0.1:1: connect: connection refused\n",
            "the remote cannot be reached: check endpoint (host and port) (Failed to cat: Get "
            '"http://127.0.0.1:1/b": dial tcp 127.0.0.1:1: connect: connection refused)',
        ),
        (  # no hint known: rclone's own words, without the log prefix
            "2026/11/30 17:52:58 CRITICAL: Failed to create file system for "
            '"r:b/fleet/web1/data": is a file not a directory\n',
            'Failed to create file system for "r:b/fleet/web1/data": is a file not a directory',
        ),
    ],
)
def test_rclones_error_is_one_line_with_what_to_check(stderr: str, said: str) -> None:
    """Found by a new-user trial: a wrong key or port read as two long log lines with
    their time stamps, naming nothing to fix."""
    assert reason(stderr) == said


def test_a_closed_window_is_no_copy_no_alert_and_no_retry(tmp_path: Path) -> None:
    """Found by a new-user trial: a scheduled copy skipped by the window counted as
    copied (LAST COPIED and the metric moved, so the age alerts could never fire), and a
    copy cut at the window's end was alerted and retried outside it."""
    section_file(tmp_path)
    now = utcnow()
    closed = f"{(now.hour + 2) % 24:02d}:00-{(now.hour + 3) % 24:02d}:00"
    body = f'[offsite]\nwindow = "{closed}"\n[offsite.remotes.eu]\npath = "b"\n'
    ctx = Context(load_config(offsite(tmp_path, body + 'rclone = { file = "eu.conf" }')))
    (ctx.repository("web1") / "data").mkdir(parents=True)
    (ctx.repository("web1") / "config").write_text("[repository]\nid = 1a2b\n")
    outcome = run_maintenance(ctx, "offsite", "web1", "schedule")
    assert (outcome.status, outcome.transient) == ("interrupted", False)
    assert outcome.error is not None and "not copied" in outcome.error
    [row] = offsite_rows(ctx)
    assert row["last_copied"] is None and row["last_status"] == "interrupted"
    assert ctx.catalogue.alerts() == []


def test_config_check_looks_at_a_weeks_firings_not_the_next_one(tmp_path: Path) -> None:
    """Found by a new-user trial: "*/30 * * * *" with a night window failed the check by
    day (its next firing was outside), though it starts copies inside every night."""
    cfg = OffsiteConfig(remotes={"eu": remote_cfg(tmp_path)}, window="01:00-07:00")
    assert _window(cfg.window, cfg.time_left, "*/30 * * * *").ok
    assert _window(cfg.window, cfg.time_left, "* * * * *").ok
    assert _window(cfg.window, cfg.time_left, "15 6 * * *").ok
    outside = _window(cfg.window, cfg.time_left, "15 8 * * *")
    assert not outside.ok and "starts no copy inside" in outside.detail
