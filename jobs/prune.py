"""prune: thin out each series of archives by its retention policy (decision 0006).

A series is one (source, item) of a host: ``SOURCE.ITEM.<UTC time>`` (decision 0003). The
policy is borg prune's, computed here because borg prune cannot be told to spare "the
newest archive that passed a restore drill": ``keep_last`` newest always, then the newest
archive of each of the last N days / ISO weeks / months / years that have archives, each
rule skipping periods whose archive an earlier rule already kept (so the rules add up);
a rule that finds too few periods keeps the series' oldest archive as well. Periods are
UTC, like the archive names and the schedules.

Times come from ``borg list`` (what the repository holds), drill results from the
catalogue. Archives that are not of a source configured on the host are never touched:
they are reported, so a person decides. Checkpoints are not listed by borg; start-up
reconciliation deletes them.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from backupd.config.load import RetentionConfig
from backupd.errors import BorgError
from jobs.base import MaintenanceEnv, MaintenanceResult

log = logging.getLogger(__name__)

ARCHIVE_NAME = re.compile(
    r"^(?P<source>[A-Za-z0-9][A-Za-z0-9_-]{0,62})\.(?P<item>[A-Za-z0-9_-]+)"
    r"\.(?P<stamp>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)$"
)
DELETE_BATCH = 100  # archives per `borg delete`: one transaction each, argv stays short
SHOWN = 5  # foreign archive names quoted in a warning

Period = Callable[[datetime], tuple[int, ...]]
PERIODS: tuple[tuple[str, Period], ...] = (  # borg prune's order: finer rules first
    ("daily", lambda t: (t.year, t.month, t.day)),
    ("weekly", lambda t: tuple(t.isocalendar())[:2]),  # ISO year and week: Monday to Sunday
    ("monthly", lambda t: (t.year, t.month)),
    ("yearly", lambda t: (t.year,)),
)


@dataclass(frozen=True)
class Verdict:
    name: str
    time: datetime
    reason: str | None  # why it stays: "last 1/3", "daily 2/7", "verified"...; None: pruned

    @property
    def keep(self) -> bool:
        return self.reason is not None


@dataclass(frozen=True)
class Plan:
    series: dict[tuple[str, str], list[Verdict]] = field(default_factory=dict)
    foreign: list[str] = field(default_factory=list)  # left alone: not ours to judge

    @property
    def kept(self) -> list[Verdict]:
        return [v for verdicts in self.series.values() for v in verdicts if v.keep]

    @property
    def pruned(self) -> list[Verdict]:
        return [v for verdicts in self.series.values() for v in verdicts if not v.keep]


def parse_archive_name(name: str) -> tuple[str, str] | None:
    """(source, item) of a backupd archive name; None for anything else."""
    match = ARCHIVE_NAME.match(name)
    return (match["source"], match["item"]) if match else None


def retain(
    archives: Sequence[tuple[str, datetime]],
    policy: RetentionConfig,
    protected: Mapping[str, str] | None = None,
) -> list[Verdict]:
    """The verdict on each archive of one series, newest first. ``protected`` (name -> why)
    always stays."""
    protected = protected or {}
    newest_first = sorted(archives, key=lambda a: (a[1], a[0]), reverse=True)
    reasons: dict[str, str] = {}
    for n, (name, _) in enumerate(newest_first[: policy.keep_last], 1):
        reasons[name] = f"last {n}/{policy.keep_last}"
    for rule, period_of in PERIODS:
        _keep_periods(newest_first, rule, getattr(policy, f"keep_{rule}"), period_of, reasons)
    for name, _ in newest_first:
        if name in protected and name not in reasons:
            reasons[name] = protected[name]
    return [Verdict(name, time, reasons.get(name)) for name, time in newest_first]


def _keep_periods(
    newest_first: Sequence[tuple[str, datetime]],
    rule: str,
    wanted: int,
    period_of: Period,
    reasons: dict[str, str],
) -> None:
    """borg prune's prune_split: the newest archive of each period, ``wanted`` periods."""
    if wanted == 0 or not newest_first:
        return
    kept, last = 0, None
    for name, time in newest_first:
        period = period_of(time)
        if period == last:
            continue
        last = period  # a period whose newest archive is already kept is used up all the same
        if name in reasons:
            continue
        kept += 1
        reasons[name] = f"{rule} {kept}/{wanted}"
        if kept == wanted:
            return
    oldest = newest_first[-1][0]  # too few periods: the oldest keeps ageing into the rule
    if oldest not in reasons:
        reasons[oldest] = f"{rule}[oldest] {kept + 1}/{wanted}"


def plan(
    archives: Sequence[tuple[str, datetime]],
    policies: Mapping[str, RetentionConfig],
    verified: Collection[str] = (),
    held: Mapping[str, int] | None = None,
) -> Plan:
    """Group a repository's archives into series, judge each by its source's policy.

    ``policies``: the host's configured sources; ``verified``: names that passed a drill,
    of which the newest in each series is kept whatever the policy says; ``held``: names
    an unacknowledged change alert holds (name -> its flag's id), kept until it is acked.
    """
    held = held or {}
    result = Plan()
    grouped: dict[tuple[str, str], list[tuple[str, datetime]]] = {}
    for name, time in archives:
        if ".checkpoint" in name:  # a cut-off run's leftovers: start-up reconciliation's
            continue
        key = parse_archive_name(name)
        if key is None or key[0] not in policies:
            result.foreign.append(name)
        else:
            grouped.setdefault(key, []).append((name, time))
    for key, members in sorted(grouped.items()):
        drilled = [m for m in members if m[0] in verified]
        protected = {m[0]: f"held (change alert {held[m[0]]})" for m in members if m[0] in held}
        if drilled:
            protected.setdefault(max(drilled, key=lambda a: (a[1], a[0]))[0], "verified")
        result.series[key] = retain(members, policies[key[0]], protected)
    return result


class PruneJob:
    name = "prune"
    per_repository = True

    def run(self, env: MaintenanceEnv) -> MaintenanceResult:
        assert env.host is not None and env.repository is not None
        repo = env.repository
        listing = env.borg.archive_times(repo)
        sources = env.config.hosts[env.host].sources
        policies = {name: env.config.retention_for(s) for name, s in sources.items()}
        drilled = {a.name for a in env.catalogue.live_archives(str(repo)) if a.verified_at}
        held = env.catalogue.held_archives(str(repo))
        decided = plan([(a.name, a.time) for a in listing], policies, drilled, held)
        for v in decided.kept:
            log.debug("%s: keep %s (%s)", env.host, v.name, v.reason)
        doomed = [v.name for v in decided.pruned]
        for name in doomed:
            log.debug("%s: prune %s", env.host, name)
        delete_and_record(env, repo, doomed)
        warnings = (foreign_warning(decided.foreign),) if decided.foreign else ()
        return MaintenanceResult(summarize(decided), warnings)


def delete_and_record(env: MaintenanceEnv, repo: Path, names: Sequence[str]) -> None:
    """Delete in batches, marking each batch pruned once borg has committed it."""
    for start in range(0, len(names), DELETE_BATCH):
        batch = names[start : start + DELETE_BATCH]
        try:
            env.borg.delete_archives(repo, batch)
        except BorgError:
            _record_what_went(env, repo, batch)  # borg deletes the others on a missing name
            raise
        env.catalogue.mark_pruned(str(repo), batch)


def _record_what_went(env: MaintenanceEnv, repo: Path, batch: Sequence[str]) -> None:
    try:
        present = {a.name for a in env.borg.archive_times(repo)}
    except BorgError as e:
        log.warning("%s: cannot tell which archives a failed delete removed: %s", repo, e)
        return
    env.catalogue.mark_pruned(str(repo), [n for n in batch if n not in present])


def summarize(decided: Plan) -> str:
    kept, pruned = decided.kept, decided.pruned
    if not kept and not pruned:
        text = "no archives to judge"
    else:
        why = Counter((v.reason or "").split()[0] for v in kept)
        reasons = ", ".join(f"{rule} {n}" for rule, n in sorted(why.items()))
        text = (
            f"kept {len(kept)}, pruned {len(pruned)} of {len(kept) + len(pruned)} archives "
            f"in {len(decided.series)} series (kept by {reasons})"
        )
    if decided.foreign:
        text += f"; {len(decided.foreign)} foreign archive(s) left alone"
    return text


def foreign_warning(names: Sequence[str]) -> str:
    shown = ", ".join(sorted(names)[:SHOWN]) + (", ..." if len(names) > SHOWN else "")
    return (
        f"{len(names)} archive(s) not of a source configured on this host were left alone "
        f"(delete them by hand, or configure the source): {shown}"
    )


JOB = PruneJob()
