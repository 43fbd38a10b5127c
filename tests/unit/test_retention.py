"""The retention policy of `prune` (jobs/prune.py), as pure functions: no Borg, no catalogue."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest

from backupd.config.load import RetentionConfig
from jobs.prune import Verdict, parse_archive_name, plan, retain


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def name(when: datetime, source: str = "db", item: str = "app") -> str:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    return f"{source}.{item}.{stamp}"


def series(*times: str, source: str = "db", item: str = "app") -> list[tuple[str, datetime]]:
    return [(name(at(t), source, item), at(t)) for t in times]


def policy(
    last: int = 1, daily: int = 0, weekly: int = 0, monthly: int = 0, yearly: int = 0
) -> RetentionConfig:
    return RetentionConfig(
        keep_last=last,
        keep_daily=daily,
        keep_weekly=weekly,
        keep_monthly=monthly,
        keep_yearly=yearly,
    )


def kept(verdicts: list[Verdict]) -> dict[str, str | None]:
    """{time as written in the test: reason} of what stays."""
    return {v.time.strftime("%Y-%m-%d %H:%M"): v.reason for v in verdicts if v.keep}


def test_keep_last_keeps_the_newest_whatever_their_dates() -> None:
    archives = series(
        "2024-03-01 02:00", "2024-03-01 03:00", "2024-03-01 04:00", "2023-01-01 02:00"
    )
    verdicts = retain(archives, policy(last=2))
    assert kept(verdicts) == {"2024-03-01 04:00": "last 1/2", "2024-03-01 03:00": "last 2/2"}
    assert [v.time for v in verdicts] == sorted((t for _, t in archives), reverse=True)
    assert sum(1 for v in verdicts if not v.keep) == 2


def test_daily_keeps_the_newest_of_each_day_and_rules_add_up() -> None:
    archives = series(
        "2024-01-10 03:00",
        "2024-01-10 02:00",
        "2024-01-09 23:59",
        "2024-01-09 01:00",
        "2024-01-08 02:00",
        "2024-01-07 02:00",
        "2024-01-06 02:00",
    )
    # keep_last takes both of the 10th; the 10th then counts as a day already kept, so the
    # two daily archives are the newest of the 9th and of the 8th (borg prune's rule)
    assert kept(retain(archives, policy(last=2, daily=2))) == {
        "2024-01-10 03:00": "last 1/2",
        "2024-01-10 02:00": "last 2/2",
        "2024-01-09 23:59": "daily 1/2",
        "2024-01-08 02:00": "daily 2/2",
    }


def test_days_without_archives_do_not_count() -> None:
    archives = series(
        "2024-05-20 02:00", "2024-05-10 02:00", "2024-05-01 02:00", "2024-04-01 02:00"
    )
    assert set(kept(retain(archives, policy(last=1, daily=2)))) == {
        "2024-05-20 02:00",
        "2024-05-10 02:00",
        "2024-05-01 02:00",
    }


def test_weeks_are_iso_weeks_across_the_new_year() -> None:
    # Thu 2020-12-31 and Sun 2021-01-03 are both in ISO week 2020-W53; Mon 2021-01-04 is W1
    archives = series(
        "2021-01-05 02:00",
        "2021-01-04 02:00",
        "2021-01-03 02:00",
        "2020-12-31 02:00",
        "2020-12-27 02:00",
        "2020-12-20 02:00",
    )
    assert kept(retain(archives, policy(last=1, weekly=2))) == {
        "2021-01-05 02:00": "last 1/1",
        "2021-01-03 02:00": "weekly 1/2",  # W1 is used up by the 5th; W53's newest
        "2020-12-27 02:00": "weekly 2/2",  # W52
    }


def test_monthly_and_yearly_over_years_and_the_oldest_is_kept_until_replaced() -> None:
    archives = series(
        "2024-03-15 02:00",
        "2024-03-01 02:00",
        "2024-02-29 02:00",
        "2024-01-31 23:00",
        "2023-12-31 02:00",
        "2023-06-01 02:00",
        "2022-11-11 02:00",
        "2021-06-01 02:00",
        "2021-01-01 02:00",
    )
    assert kept(retain(archives, policy(last=1, monthly=3, yearly=5))) == {
        "2024-03-15 02:00": "last 1/1",
        "2024-02-29 02:00": "monthly 1/3",
        "2024-01-31 23:00": "monthly 2/3",
        "2023-12-31 02:00": "monthly 3/3",
        "2022-11-11 02:00": "yearly 1/5",  # 2024 and 2023 are used up by the rules before
        "2021-06-01 02:00": "yearly 2/5",
        # no more years: borg keeps the oldest as well, so it can age into the rule
        "2021-01-01 02:00": "yearly[oldest] 3/5",
    }


def test_the_newest_verified_archive_survives_a_policy_that_would_drop_it() -> None:
    archives = series(
        "2024-06-03 02:00", "2024-06-02 02:00", "2024-06-01 02:00", "2024-05-01 02:00"
    )
    drilled = name(at("2024-06-01 02:00"))
    without = kept(retain(archives, policy(last=2)))
    assert "2024-06-01 02:00" not in without
    assert kept(retain(archives, policy(last=2), protected={drilled: "verified"})) == {
        **without,
        "2024-06-01 02:00": "verified",
    }


def test_series_are_judged_independently_each_by_its_source_policy() -> None:
    db = series("2024-01-03 02:00", "2024-01-02 02:00", "2024-01-01 02:00", source="db")
    db_other = series("2024-01-03 02:00", "2024-01-02 02:00", item="globals", source="db")
    files = series("2024-01-03 02:30", "2024-01-02 02:30", "2024-01-01 02:30", source="files")
    decided = plan(db + db_other + files, {"db": policy(last=2), "files": policy(last=1)})
    assert set(decided.series) == {("db", "app"), ("db", "globals"), ("files", "app")}
    assert len(kept(decided.series[("db", "app")])) == 2
    assert len(kept(decided.series[("db", "globals")])) == 2  # not crowded out by "app"
    assert kept(decided.series[("files", "app")]) == {"2024-01-03 02:30": "last 1/1"}
    assert {v.name for v in decided.pruned} == {db[2][0], files[1][0], files[2][0]}
    assert decided.foreign == []


def test_foreign_and_unknown_source_archives_are_left_alone_checkpoints_ignored() -> None:
    ours = series("2024-01-02 02:00", "2024-01-01 02:00")
    other = series("2023-01-01 02:00", source="gone")
    odd = [
        ("manual-before-upgrade", at("2020-01-01 00:00")),
        ("db.app.2024-01-01", at("2020-01-01 00:00")),
    ]
    checkpoint = [(ours[0][0] + ".checkpoint", at("2024-01-03 02:00"))]
    decided = plan(ours + other + odd + checkpoint, {"db": policy(last=1)})
    assert sorted(decided.foreign) == sorted([other[0][0], *(n for n, _ in odd)])
    assert [v.name for v in decided.pruned] == [ours[1][0]]
    assert [v.name for v in decided.kept] == [ours[0][0]]


def test_only_the_newest_verified_archive_of_each_series_is_protected() -> None:
    archives = series(
        "2024-01-05 02:00", "2024-01-04 02:00", "2024-01-03 02:00", "2024-01-02 02:00"
    )
    verified = [archives[2][0], archives[3][0]]  # drills passed on the 3rd and the 2nd
    decided = plan(archives, {"db": policy(last=1)}, verified)
    assert {v.name: v.reason for v in decided.kept} == {
        archives[0][0]: "last 1/1",
        archives[2][0]: "verified",
    }
    assert {v.name for v in decided.pruned} == {archives[1][0], archives[3][0]}


def test_an_archive_a_change_alert_holds_stays_until_acked_in_its_series_only() -> None:
    """The night before one that looked like loss (decision 0024) outlives its rules while
    its flag is open; a drill's archive is still kept beside it; other series are not
    held by it."""
    archives = series(
        "2024-01-05 02:00", "2024-01-04 02:00", "2024-01-03 02:00", "2024-01-02 02:00"
    )
    other = series("2024-01-05 02:00", "2024-01-04 02:00", item="globals")
    held = {archives[2][0]: 7}
    decided = plan(archives + other, {"db": policy(last=1)}, [archives[3][0]], held)
    assert {v.name: v.reason for v in decided.series[("db", "app")] if v.keep} == {
        archives[0][0]: "last 1/1",
        archives[2][0]: "held (change alert 7)",
        archives[3][0]: "verified",
    }
    assert [v.name for v in decided.series[("db", "globals")] if not v.keep] == [other[1][0]]
    acked = plan(archives, {"db": policy(last=1)})
    assert [v.name for v in acked.kept] == [archives[0][0]]


def test_archive_names_parse_into_source_and_item() -> None:
    assert parse_archive_name("maindb.app.2024-01-01T02:00:00.123Z") == ("maindb", "app")
    assert parse_archive_name("www.data_x-1a2b3c4d.2024-01-01T02:00:00.000Z") == (
        "www",
        "data_x-1a2b3c4d",
    )
    for other in (
        "catalogue.2024-01-01T02:00:00.000Z",
        "a.b.2024-01-01T02:00:00.000Z.checkpoint",
        "a.b.c.2024-01-01T02:00:00.000Z",
        "a.b.2024-01-01",
    ):
        assert parse_archive_name(other) is None


# -- the same verdicts as borg prune's own code ------------------------------------------
class BorgArchive(NamedTuple):
    id: str
    ts: datetime


@pytest.fixture
def utc_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """borg prune reads periods in local time; backupd in UTC: make them the same."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("utc_local_time")
@pytest.mark.parametrize("seed", range(40))
def test_kept_archives_match_borg_prune(seed: int) -> None:
    from borg.helpers.misc import prune_split

    rng = random.Random(seed)
    start = at("2021-06-01 00:00")
    seconds = rng.sample(range(3 * 365 * 86400), rng.randint(1, 120))
    archives = [(f"a{i}", start + timedelta(seconds=s)) for i, s in enumerate(seconds)]
    rules = policy(
        last=rng.randint(1, 5),
        daily=rng.randint(0, 10),
        weekly=rng.randint(0, 6),
        monthly=rng.randint(0, 12),
        yearly=rng.randint(0, 3),
    )
    ours = {v.name: v.reason.split()[0] for v in retain(archives, rules) if v.reason}
    because: dict[str, tuple[str, int]] = {}
    borg_archives = [BorgArchive(n, t) for n, t in archives]
    prune_split(borg_archives, "secondly", rules.keep_last, because)
    for rule in ("daily", "weekly", "monthly", "yearly"):
        prune_split(borg_archives, rule, getattr(rules, f"keep_{rule}"), because)
    theirs = {n: r.replace("secondly", "last") for n, (r, _) in because.items()}
    assert ours == theirs
