"""Parsing of human-friendly durations and sizes in the config ("90s", "6h", "10MiB"), and
the few ways backupd writes ages, sizes and times back out."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BeforeValidator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_delay(value: object) -> float:
    """Like a duration, but zero ("0", "0s", "0m": none) is allowed."""
    seconds = _seconds(value)
    if seconds < 0:
        raise ValueError("a delay cannot be negative")
    return seconds


def parse_duration(value: object) -> float:
    """Seconds from a number (seconds) or a string like "90s", "15m", "6h", "7d"."""
    seconds = _seconds(value)
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


def _seconds(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 15m or 6h")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if value == "0":
        return 0.0
    raise ValueError("expected a duration such as 30s, 15m or 6h")


def parse_size(value: object) -> int:
    """Bytes from a number or a string like "512", "10k", "10KiB", "2GB" (KiB = 1024)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 1024, 10KiB or 2GB")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        unit = (m.group(2) or "").lower()
        binary = "i" in unit
        letter = unit[:1] if unit not in ("b", "") else ""
        base = _SIZE_UNITS[letter]
        if binary:
            base = 1024 ** ("kmgt".index(letter) + 1)
        size = int(float(m.group(1)) * base)
    else:
        raise ValueError("expected a size such as 1024, 10KiB or 2GB")
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


Duration = Annotated[float, BeforeValidator(parse_duration)]
Delay = Annotated[float, BeforeValidator(parse_delay)]  # a Duration that may be zero
Size = Annotated[int, BeforeValidator(parse_size)]


def human_age(seconds: float | None) -> str:
    """'3h 12m', '2d 4h', 'never': how old, the way a person reads it."""
    if seconds is None:
        return "never"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def utc_iso(when: datetime) -> str:
    """'2026-11-25T02:14:09+00:00': ISO 8601 in UTC to the second, the one time format of
    every ``--json`` output (docs/backupctl.md). A naive time is taken as UTC, like the
    catalogue's."""
    aware = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    return aware.isoformat(timespec="seconds")
