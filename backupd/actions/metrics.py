"""Prometheus metrics (issue 17, decision 0025): what ``status`` knows, in the exposition
format, written by the official client library (prometheus-client).

Labels are ``host``, ``source`` and ``item`` only: never an archive name or a run id, so a
series lives as long as its source, and "backup too old" is ``time() -
backupd_source_last_success_timestamp_seconds`` whatever retention keeps. Times are
Unix seconds, sizes bytes; a time that never happened is 0 (infinitely old: an age rule
fires on it), so every configured source has every series from its first scrape.

Each scrape reads the catalogue afresh in a handful of statements (status_rows and
catalogue/gauges.py), whatever the number of sources: the daemon serves it on ``[metrics]
listen``; ``backupctl metrics`` prints or writes it (node_exporter's textfile collector).
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

import backupd
from backupd.actions.context import Context
from backupd.actions.status import offsite_rows, status_rows
from backupd.catalogue.history import ItemPoint
from backupd.catalogue.models import RunStatus

SOURCE = ["host", "source"]
ITEM = ["host", "source", "item"]
STATES = ("queued", "running")  # of a daemon job
NAN = float("nan")  # "not known yet": a rule comparing it is false, an age rule does not fire


def _ts(value: str | datetime | None) -> float:
    """Unix seconds of an ISO time or datetime; 0 for never."""
    if value is None:
        return 0.0
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.timestamp()


Samples = Iterable[tuple[list[str], float]]  # (label values, value)


def _gauge(name: str, doc: str, labels: list[str], samples: Samples) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


class FleetCollector(Collector):
    """Collects the fleet's metrics from the catalogue at each scrape. ``context_of``
    gives the current Context (the daemon's changes on a reload)."""

    def __init__(self, context_of: Callable[[], Context]) -> None:
        self._context_of = context_of

    def collect(self) -> Iterator[Metric]:
        ctx = self._context_of()
        cat = ctx.catalogue
        points = cat.newest_per_item()  # once: status's rows and the per-item series
        rows = status_rows(ctx, points)
        keys = [(r["host"], r["source"]) for r in rows]
        counts, seconds, verified = cat.run_counts(), cat.last_run_seconds(), cat.last_verified()
        info = InfoMetricFamily("backupd_build", "The backupd that serves these metrics.")
        info.add_metric([], {"version": backupd.__version__})
        yield info
        for row, key in zip(rows, keys, strict=True):
            row.update(verified=verified.get(key), seconds=seconds.get(key))
        yield from _per_source(rows)
        runs = CounterMetricFamily(
            "backupd_runs", "Backup runs finished, whatever their outcome.", labels=SOURCE
        )
        failures = CounterMetricFamily(
            "backupd_run_failures", "Backup runs that failed.", labels=SOURCE
        )
        for key in keys:
            total, failed = counts.get(key, (0, 0))
            runs.add_metric(list(key), total)
            failures.add_metric(list(key), failed)
        yield runs
        yield failures
        yield from _per_item(points, keys)
        yield from _store(ctx)
        yield from _offsite(ctx)
        open_flags = Counter((v.host, v.source) for v in cat.change_flags(open_only=True))
        yield _gauge(
            "backupd_source_change_alerts_open",
            "Unacknowledged change alerts (nights that looked like loss) of the source.",
            SOURCE,
            [(list(k), float(open_flags[k])) for k in keys],
        )
        jobs = cat.queued_jobs()
        yield _gauge(
            "backupd_jobs",
            "Daemon jobs queued and running now, by state.",
            ["state"],
            [([state], float(sum(1 for j in jobs if j.state == state))) for state in STATES],
        )
        # without [mail] and [notify] alerts are recorded and logged, never delivered: none
        # is pending. Chat: the services of the newest dispatch (the daemon's, each minute)
        chats = cat.current_channels() if ctx.config.notify is not None else []
        pending = float(cat.undelivered_count(ctx.config.mail is not None, chats))
        yield _gauge(
            "backupd_alerts_pending",
            "Alerts not yet delivered to mail or a chat service (0 without either).",
            [],
            [([], pending)],
        )


# A source's row: status_rows' dict, with "verified" (a datetime or None) and "seconds"
# (the newest finished run's) added by the collector.
SOURCE_GAUGES: tuple[tuple[str, str, Callable[[dict[str, Any]], float]], ...] = (
    (
        "backupd_source_last_success_timestamp_seconds",
        "When the source's newest successful backup ended (0: never).",
        lambda r: _ts(r["last_success"]),
    ),
    (
        "backupd_source_last_attempt_timestamp_seconds",
        "When the source's newest backup run started, whatever its outcome (0: never).",
        lambda r: _ts(r["last_run"]),
    ),
    (
        "backupd_source_last_verified_timestamp_seconds",
        "When a restore drill last restored the source, pass or warn (0: never).",
        lambda r: _ts(r["verified"]),
    ),
    (
        "backupd_source_last_run_duration_seconds",
        "How long the source's newest finished run took (NaN: none yet).",
        lambda r: NAN if r["seconds"] is None else float(r["seconds"]),
    ),
    (
        "backupd_source_last_run_success",
        "1 if the source's newest run succeeded (a warning counts), else 0 (NaN: none yet).",
        lambda r: (
            NAN
            if r["last_status"] is None
            else float(r["last_status"] in (RunStatus.SUCCEEDED, RunStatus.WARNING))
        ),
    ),
    (
        "backupd_source_stale",
        "1 if the source has not succeeded within [alerts] stale_factor x its interval.",
        lambda r: float(r["stale"]),
    ),
    (
        "backupd_source_last_drill_success",
        "1 if the source's newest finished drill restored it (pass or warn), 0 if it failed"
        " (NaN: never drilled).",
        lambda r: _drilled(r["last_drill"]),
    ),
    (
        "backupd_source_drill_rto_seconds",
        "Restore time of the source's newest finished drill (NaN: never drilled).",
        lambda r: _rto(r["last_drill"]),
    ),
)


def _per_source(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    for name, doc, value in SOURCE_GAUGES:
        yield _gauge(name, doc, SOURCE, [([r["host"], r["source"]], value(r)) for r in rows])


def _drilled(drill: dict[str, Any] | None) -> float:
    if drill is None:
        return float("nan")
    return 0.0 if drill["verdict"] == "fail" else 1.0


def _rto(drill: dict[str, Any] | None) -> float:
    if drill is None or drill["rto_seconds"] is None:
        return float("nan")
    return float(drill["rto_seconds"])


ITEM_GAUGES: tuple[tuple[str, str, Callable[[ItemPoint], float]], ...] = (
    (
        "backupd_item_last_archive_timestamp_seconds",
        "When the item's newest live archive was made.",
        lambda p: p.created_at.timestamp(),
    ),
    ("backupd_item_archives", "Live (not pruned) archives of the item.", lambda p: p.archives),
    (
        "backupd_item_original_bytes",
        "Bytes the item's live archives hold, before compression and deduplication.",
        lambda p: p.original,
    ),
    (
        "backupd_item_stored_bytes",
        "Bytes the item's live archives added to the repository when each was made.",
        lambda p: p.deduplicated,
    ),
)


def _per_item(
    points: dict[tuple[str, str], list[ItemPoint]], keys: list[tuple[str, str]]
) -> Iterator[Metric]:
    items = [(k, p) for k in keys for p in points.get(k, [])]
    for name, doc, value in ITEM_GAUGES:
        yield _gauge(name, doc, ITEM, [([*k, p.item], float(value(p))) for k, p in items])


def _store(ctx: Context) -> Iterator[Metric]:
    free = used = NAN  # no store (yet): the series are there, saying "not known"
    try:
        usage = shutil.disk_usage(ctx.config.store.path)
        free, used = float(usage.free), float(usage.used)
    except OSError:
        pass
    yield _gauge(
        "backupd_store_free_bytes",
        "Free bytes of the store's file system (NaN: no store directory).",
        [],
        [([], free)],
    )
    yield _gauge(
        "backupd_store_used_bytes",
        "Used bytes of the store's file system (NaN: no store directory).",
        [],
        [([], used)],
    )


# A host's off-site row: offsite_rows' dict. Only with [offsite] (no series without it).
OFFSITE_GAUGES: tuple[tuple[str, str, Callable[[dict[str, Any]], float]], ...] = (
    (
        "backupd_offsite_last_copy_timestamp_seconds",
        "When the host's repository was last copied to every [offsite] remote, read back"
        " and matched (0: never).",
        lambda c: _ts(c["last_copied"]),
    ),
    (
        "backupd_offsite_last_verified_timestamp_seconds",
        "When a drill of the host's off-site copies last restored every source (0: never).",
        lambda c: _ts(c["copy_verified"]),
    ),
    (
        "backupd_offsite_last_drill_success",
        "1 if the newest drill of the host's off-site copies restored every source (a"
        " warning counts), 0 if it failed (NaN: never drilled).",
        lambda c: _outcome(c["drill_status"]),
    ),
)


def _offsite(ctx: Context) -> Iterator[Metric]:
    copies = offsite_rows(ctx)
    for name, doc, value in OFFSITE_GAUGES if copies else ():
        yield _gauge(name, doc, ["host"], [([c["host"]], value(c)) for c in copies])


def _outcome(status: str | None) -> float:
    if status is None or status == RunStatus.INTERRUPTED:
        return NAN  # not a verdict
    return float(status in (RunStatus.SUCCEEDED, RunStatus.WARNING))


def registry_for(context_of: Callable[[], Context]) -> CollectorRegistry:
    """A registry holding only backupd's metrics (no process or Python collectors: the
    daemon's own are node_exporter's and systemd's business)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(context_of))
    return registry


def exposition(ctx: Context) -> bytes:
    """The metrics in the text exposition format (version 0.0.4)."""
    return generate_latest(registry_for(lambda: ctx))


def write_textfile(ctx: Context, path: Path) -> None:
    """Write the metrics to ``path`` atomically (a temporary file renamed over it), as
    node_exporter's textfile collector needs; the file is 0644 for the exporter's user."""
    write_to_textfile(str(path), registry_for(lambda: ctx))
