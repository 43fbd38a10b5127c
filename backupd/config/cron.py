"""Crontab lines for schedules, with the crontab meaning of weekday numbers.

APScheduler 3's ``CronTrigger.from_crontab`` counts weekdays from Monday = 0 (its docs
call this a historical mistake, fixed in 4.x); crontab counts Sunday = 0 (and 7). We map
numbers to names so "0 6 * * 0" means Sunday, as every admin expects. An optional sixth
leading field gives seconds (tests use it to fire within seconds). Times are UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.cron import CronTrigger

DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NUMBER = re.compile(r"(?<![/\d])([0-7])(?!\d)")  # not a step like */2


def crontab_weekdays(field: str) -> str:
    return _DAY_NUMBER.sub(lambda m: DAY_NAMES[int(m.group(1))], field)


def cron_trigger(expr: str, jitter: float = 0.0) -> CronTrigger:
    """A trigger for ``[second] minute hour day month weekday``; ValueError when malformed."""
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
    second = fields.pop(0) if len(fields) == 6 else "0"
    minute, hour, day, month, weekday = fields
    return CronTrigger(
        second=second,
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=crontab_weekdays(weekday),
        timezone=UTC,
        jitter=int(jitter) or None,
    )


def interval(expr: str, now: datetime) -> timedelta:
    """The time between the next two firings: how old a last success may be before the
    daemon counts the run as missed."""
    trigger = cron_trigger(expr)
    first = trigger.get_next_fire_time(None, now)
    if first is None:
        return timedelta.max
    second = trigger.get_next_fire_time(first, first + timedelta(microseconds=1))
    return (second - first) if second is not None else timedelta.max
