from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backupd.actions.backup import archive_name
from backupd.borg.adapter import borg_literal
from backupd.config.units import parse_delay, parse_duration, parse_size
from backupd.local.process import mask_argv
from jobs.base import slug


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(30, 30.0), ("90s", 90.0), ("15m", 900.0), ("6h", 21600.0), ("1d", 86400.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-5s", 0, True, "5 parsecs"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "seconds"), [(0, 0.0), ("0", 0.0), ("0s", 0.0), ("0m", 0.0), ("1h", 3600.0)]
)
def test_delays_may_be_zero_written_any_way(text: object, seconds: float) -> None:
    """`jitter = "0s"` is how a person writes "no jitter" (it was refused as not positive)."""
    assert parse_delay(text) == seconds


@pytest.mark.parametrize("text", ["-1s", "soon", True])
def test_bad_delays(text: object) -> None:
    with pytest.raises(ValueError):
        parse_delay(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [(512, 512), ("1k", 1000), ("1KiB", 1024), ("2MiB", 2 * 1024**2), ("1GB", 10**9)],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


def test_secrets_are_masked_in_logged_commands() -> None:
    line = mask_argv(["mysql", "--password=hunter2", "db name"], secrets=["hunter2"])
    assert "hunter2" not in line
    assert "***" in line
    assert "'db name'" in line


def test_slug_keeps_safe_names_and_disambiguates_unsafe_ones() -> None:
    assert slug("app") == "app"
    odd = slug("my db; rm -rf /")
    assert odd.startswith("my_db_rm_-rf-") and len(odd.split("-")[-1]) == 8
    assert slug("a b") != slug("a_b")
    dash = slug("-dash")  # file and archive names a tool must not read as an option
    assert dash.startswith("dash-") and dash != slug("dash") and not slug("--").startswith("-")


def test_archive_names_sort_by_time_and_keep_milliseconds() -> None:
    when = datetime(2026, 11, 25, 3, 0, 1, 234567, tzinfo=UTC)
    assert archive_name("maindb", "app", when) == "maindb.app.2026-11-25T03:00:01.234Z"


def test_borg_literal_doubles_braces() -> None:
    assert borg_literal('{"a": 1}') == '{{"a": 1}}'


def test_remote_command_line_survives_hostile_names() -> None:
    import subprocess

    from backupd.remote.ssh import remote_command_line

    hostile = ["printf", "%s|", "a b", "x;touch /tmp/pwned", "$(id)", "'q'", "`id`"]
    line = remote_command_line(hostile)
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True)
    assert out.stdout == "a b|x;touch /tmp/pwned|$(id)|'q'|`id`|"


def test_remote_command_line_reports_a_killing_signal() -> None:
    import subprocess

    from backupd.remote.ssh import remote_command_line

    line = remote_command_line(["sh", "-c", "kill -9 $$"])
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=False)
    assert out.returncode == 137
    assert "backupd: sh killed by signal 9" in out.stderr


def test_stderr_summary_prefers_the_lines_that_say_what_went_wrong() -> None:
    from backupd.errors import summarize_stderr

    tail = (
        'pg_dump: error: Dumping the contents of table "blob" failed: PQgetCopyData() failed.\n'
        "pg_dump: detail: Error message from server: FATAL:  terminating connection due to "
        "administrator command\n"
        "pg_dump: detail: Command was: COPY public.blob (id, body) TO stdout;\n"
    )
    line = summarize_stderr(tail)
    assert "\n" not in line
    assert "PQgetCopyData() failed" in line and "terminating connection" in line
    assert "Command was" not in line
    assert summarize_stderr("just one line") == "just one line"
    assert summarize_stderr("") == ""


def test_remote_command_line_keeps_stdin_for_the_command() -> None:
    import subprocess

    from backupd.remote.ssh import remote_command_line

    line = remote_command_line(["cat"])
    out = subprocess.run(
        ["sh", "-c", line], input="to the command", capture_output=True, text=True, check=True
    )
    assert out.stdout == "to the command"


def test_remote_command_line_passes_term_on_to_the_command() -> None:
    import re
    import shlex
    import signal
    import subprocess
    import time
    from pathlib import Path

    from backupd.remote.ssh import remote_command_line

    # sshd's shell execs a single command, so the wrapper itself receives the signal
    argv = shlex.split(remote_command_line(["sleep", "30"]))
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    # the wrapper traps TERM once its command runs (a fixed wait was luck on a busy machine)
    status = Path(f"/proc/{proc.pid}/status")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        caught = re.search(r"^SigCgt:\s*([0-9a-f]+)$", status.read_text(), re.M)
        if caught and int(caught[1], 16) & 1 << (signal.SIGTERM - 1):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 143
    assert "backupd: sleep killed by signal 15" in err


def test_a_python_traceback_is_summed_up_by_what_was_raised() -> None:
    """Borg's tracebacks (exit 90: a damaged segment): the frames' lines ("raise
    IntegrityError(...") say nothing to a person at a bad hour; the exception's does.
    Another member: a traceback of a ValueError, cut at its start."""
    from backupd.errors import summarize_stderr

    tail = (
        "ne 1647, in read\n    size, tag = self._read(fd, header)\n"
        '  File "/venv/lib/python3.11/site-packages/borg/repository.py", line 1686, in _read\n'
        "    raise IntegrityError('Segment entry checksum mismatch [segment {}, offset {}]'\n"
        "borg.helpers.errors.IntegrityError: Data integrity error: Segment entry checksum "
        "mismatch [segment 6, offset 8]\n"
    )
    assert summarize_stderr(tail) == (
        "borg.helpers.errors.IntegrityError: Data integrity error: Segment entry checksum "
        "mismatch [segment 6, offset 8]"
    )
    cut = '  File "x.py", line 3, in f\n    int(text)\nValueError: invalid literal for int()\n'
    assert summarize_stderr(cut) == "ValueError: invalid literal for int()"
    # no traceback: as before, even with a line that looks like an exception's
    assert summarize_stderr("KeyError: 'x'\nborg: error: no such repository") == (
        "KeyError: 'x' | borg: error: no such repository"
    )
