"""What every backupctl command shares: clean errors, the context, tables, ages, JSON."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import wraps
from pathlib import PurePath
from typing import Any, NoReturn, ParamSpec, TypeVar

import click

from backupd.actions.context import Context, settle
from backupd.config.units import human_age, parse_duration, utc_iso
from backupd.errors import BackupdError
from jobs.registry import load_config

log = logging.getLogger("backupctl")
# The version of every --json shape (docs/backupctl.md, "JSON output"): fields may be added
# under it; removing or changing one means 2, and a line in the changelog.
SCHEMA_VERSION = 1
P = ParamSpec("P")
R = TypeVar("R")


def clean_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a BackupdError into one line on stderr and its exit code, never a traceback."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except BackupdError as e:
            click.echo(f"backupctl: error: {e}", err=True)
            sys.exit(e.exit_code)
        except BrokenPipeError:
            reader_went_away()
        except (click.exceptions.Exit, click.ClickException, SystemExit, KeyboardInterrupt):
            raise
        except Exception as e:
            # A bug, not an operator error: one line, the traceback only with --verbose.
            log.debug("internal error", exc_info=True)
            click.echo(
                f"backupctl: internal error: {type(e).__name__}: {e} "
                "(run with --verbose for the traceback)",
                err=True,
            )
            sys.exit(70)

    return wrapper


EXIT_PIPE = 128 + signal.SIGPIPE  # what a shell reports for a tool killed by SIGPIPE


def reader_went_away() -> NoReturn:
    """Our output's reader closed the pipe (``backupctl archives | head -5``): end quietly,
    as Unix tools do, with the status a shell shows for SIGPIPE. SIGPIPE itself stays
    ignored: a restore must see a dead consumer as an error it can record, not die."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush goes nowhere
    os.close(devnull)
    sys.exit(EXIT_PIPE)


def context(obj: dict[str, Any]) -> Context:
    if "ctx" not in obj:
        obj["ctx"] = Context(load_config(obj["config"]))
        settle()
    ctx: Context = obj["ctx"]
    return ctx


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell; nothing at all but the header when empty."""
    cells = [list(header)] + [list(r) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def emit_json(**sections: object) -> None:
    """Print what a ``--json`` option prints: one object, ``{"schema_version": 1, **sections}``
    (e.g. ``emit_json(archives=rows)``), each shape documented in docs/backupctl.md.

    Times become ISO 8601 UTC strings to the second (units.utc_iso), dataclasses objects,
    paths strings. Any other type raises TypeError: a value whose shape nobody chose must not
    reach a script as its ``str()``."""
    document = {"schema_version": SCHEMA_VERSION, **sections}
    click.echo(json.dumps(document, indent=2, default=_plain))


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return utc_iso(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"{type(value).__name__} has no documented JSON form")


age = human_age  # '3h 12m', '2d 4h', 'never'


def short_time(iso: str | datetime | None) -> str:
    if iso is None:
        return "-"
    text = iso.isoformat(timespec="seconds") if isinstance(iso, datetime) else iso
    return text.replace("+00:00", "Z").replace("T", " ")


def parse_at(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    """A point in time from the command line ("at or before"); without a zone it is UTC,
    like the catalogue. Given to the second (as every time is shown), it means the end of
    that second: a backup shown as 02:14:09 was made at 02:14:09.412."""
    when = _time(value)
    if when is None or when.microsecond:
        return when
    return when.replace(microsecond=999_999)


def parse_from(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    """A point in time from the command line ("at or after"): the start of what is given."""
    return _time(value)


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f'expected a time like "2026-11-20 03:00", got {value!r}'
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def since_time(value: str | None, option: str = "--since") -> datetime | None:
    """``--since 7d``: that long before now (UTC), or None."""
    if not value:
        return None
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(value))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=option) from None
