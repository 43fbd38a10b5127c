"""Prometheus metrics (issue 17, decision 0025): the exposition's series, labels and
values from a catalogue; the daemon's endpoint, and its one alert when it cannot listen."""

from __future__ import annotations

import math
import socket
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from backupd.actions.context import Context
from backupd.actions.metrics import exposition
from backupd.catalogue.models import Archive, utcnow
from backupd.cli.main import cli
from backupd.daemon.metrics import serve_metrics
from backupd.errors import ConfigError
from jobs.registry import load_config
from tests.harness.example_report import MiB, drill, run, source, write_config

FLEET = {"web1": {"maindb": "postgresql", "files": "directory"}, "web2": {"app": "sqlite"}}
LABELS = {"host", "source", "item"}


def make_ctx(tmp_path: Path, extra: str = "") -> Context:
    return Context(load_config(write_config(tmp_path, FLEET, extra)))


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    """maindb: three good nights, a passing then a failing drill; files: one failure,
    never a success; app: nothing yet."""
    c = make_ctx(tmp_path)
    (tmp_path / "store").mkdir()
    now = utcnow()
    with c.catalogue.session() as s:
        maindb = source(s, "web1", "maindb", "postgresql")
        for d in (3, 2, 1):
            run(s, maindb, now - timedelta(days=d), dedup=10 * MiB, original=100 * MiB)
        drill(s, maindb, now - timedelta(days=2), "pass", 41.0)
        drill(s, maindb, now - timedelta(hours=5), "fail", 90.0)
        files = source(s, "web1", "files", "directory")
        run(s, files, now - timedelta(hours=3), status="failed", error="web1/files: refused")
    return c


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_every_source_has_its_times_counts_and_verdicts(ctx: Context) -> None:
    text = exposition(ctx).decode()
    found = samples(text)
    maindb = {"host": "web1", "source": "maindb"}
    newest = max(a.created_at for a in ctx.catalogue.archives("web1", "maindb"))
    success = value(found, "backupd_source_last_success_timestamp_seconds", **maindb)
    assert success == pytest.approx((newest + timedelta(minutes=4)).timestamp())
    assert value(found, "backupd_source_last_verified_timestamp_seconds", **maindb) > 0
    assert value(found, "backupd_source_drill_rto_seconds", **maindb) == 90.0  # newest drill
    assert value(found, "backupd_source_last_drill_success", **maindb) == 0  # it failed
    assert value(found, "backupd_source_last_run_duration_seconds", **maindb) == 240.0
    assert value(found, "backupd_runs_total", **maindb) == 3
    assert value(found, "backupd_run_failures_total", **maindb) == 0
    assert value(found, "backupd_item_stored_bytes", item="maindb", **maindb) == 30 * MiB
    assert value(found, "backupd_item_original_bytes", item="maindb", **maindb) == 300 * MiB
    files = {"host": "web1", "source": "files"}
    assert value(found, "backupd_source_last_success_timestamp_seconds", **files) == 0  # never
    assert value(found, "backupd_source_last_attempt_timestamp_seconds", **files) > 0
    assert value(found, "backupd_source_last_run_success", **files) == 0
    assert value(found, "backupd_source_stale", **files) == 1
    assert value(found, "backupd_run_failures_total", **files) == 1
    app = {"host": "web2", "source": "app"}  # configured, never run: present all the same
    assert value(found, "backupd_source_last_verified_timestamp_seconds", **app) == 0
    assert value(found, "backupd_runs_total", **app) == 0
    assert math.isnan(value(found, "backupd_source_last_run_success", **app))  # none yet
    assert math.isnan(value(found, "backupd_source_last_run_duration_seconds", **app))
    assert value(found, "backupd_alerts_pending") == 0  # no [mail]: nothing is pending
    assert value(found, "backupd_build_info", version="0.1.0") == 1
    assert value(found, "backupd_store_free_bytes") > 0
    assert value(found, "backupd_jobs", state="queued") == 0


def test_labels_are_host_source_and_item_only_never_an_archive(ctx: Context) -> None:
    text = exposition(ctx).decode()
    archives = {a.name for a in ctx.catalogue.archives("web1", "maindb")}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            allowed = LABELS | ({"state"} if s.name == "backupd_jobs" else set())
            allowed |= {"version"} if s.name == "backupd_build_info" else set()
            assert set(s.labels) <= allowed, s
            assert not archives & set(s.labels.values()), s


def test_the_listen_address_is_checked_once_with_the_config(tmp_path: Path) -> None:
    for bad in (
        "9469",
        "localhost",
        "127.0.0.1:99999",
        ":9469",
        "127.0.0.1:x",
        "http://127.0.0.1:9469",
        "::1:9469",
    ):
        with pytest.raises(ConfigError, match=r"metrics\.listen"):
            make_ctx(tmp_path, f'[metrics]\nlisten = "{bad}"\n')
    assert make_ctx(tmp_path, '[metrics]\nlisten = ""\n').config.metrics.address is None
    v6 = make_ctx(tmp_path, '[metrics]\nlisten = "[::1]:9469"\n').config.metrics.address
    assert v6 == ("::1", 9469)
    assert make_ctx(tmp_path).config.metrics.address == ("127.0.0.1", 9469)  # loopback


def test_the_daemon_serves_what_backupctl_prints(ctx: Context, tmp_path: Path) -> None:
    served = make_ctx(tmp_path, '[metrics]\nlisten = "127.0.0.1:0"\n')
    server = serve_metrics(lambda: served)
    assert server is not None
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            body = answer.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert "backupd_source_last_success_timestamp_seconds" in body
    assert [a.kind for a in served.catalogue.alerts()] == []  # served: no alert


def test_a_port_that_cannot_be_had_is_one_alert_and_off_is_silent(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        c = make_ctx(tmp_path, f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
        assert serve_metrics(lambda: c) is None
    [alert] = c.catalogue.alerts()
    assert alert.kind == "metrics_failed" and f"127.0.0.1:{port}" in alert.message
    (tmp_path / "off").mkdir()
    off = make_ctx(tmp_path / "off", '[metrics]\nlisten = ""\n')
    assert serve_metrics(lambda: off) is None and off.catalogue.alerts() == []


def test_backupctl_metrics_prints_or_writes_a_textfile(ctx: Context, tmp_path: Path) -> None:
    runner = CliRunner()
    config = ["--config", str(ctx.config.path)]
    printed = runner.invoke(cli, [*config, "metrics"])
    assert printed.exit_code == 0 and "backupd_runs_total" in printed.output
    target = tmp_path / "backupd.prom"
    written = runner.invoke(cli, [*config, "metrics", "--textfile", str(target)])
    assert written.exit_code == 0 and "backupd_runs_total" in target.read_text()
    assert [p.name for p in tmp_path.glob("backupd.prom*")] == ["backupd.prom"]  # renamed
    wrong = runner.invoke(cli, [*config, "metrics", "--textfile", str(tmp_path / "m.txt")])
    assert wrong.exit_code == 2 and "ending in .prom" in wrong.output
    (tmp_path / "a-file").write_text("")
    inside = runner.invoke(cli, [*config, "metrics", "--textfile", str(tmp_path / "a-file/m.prom")])
    assert inside.exit_code == 2 and "a-file: not a directory" in inside.output
    # a file the system will not make (the tests run as root, whom permissions do not stop)
    long = tmp_path / ("x" * 251 + ".prom")
    denied = runner.invoke(cli, [*config, "metrics", "--textfile", str(long)])
    assert denied.exit_code == 1 and "cannot write " in denied.output, denied.output
    assert "File name too long" in denied.output and "internal error" not in denied.output


def test_the_newest_restore_points_drill_counts_whatever_order_the_round_ran(
    tmp_path: Path,
) -> None:
    """A round drills the newest archive and an older one; the older one's drill may
    start and end last. The verdict, RTO and status are the newest point's (found in a
    new-user trial: a newest point that did not restore showed as passed)."""
    c = make_ctx(tmp_path)
    now = utcnow()
    with c.catalogue.session() as s:
        src = source(s, "web1", "maindb", "postgresql")
        for days in (2, 1):
            run(s, src, now - timedelta(days=days), original=1)
        s.flush()
        older, newest = [a.name for a in s.query(Archive).order_by(Archive.created_at)]
        drill(s, src, now - timedelta(minutes=9), "fail", 5.0).archive = newest
        drill(s, src, now - timedelta(minutes=2), "pass", 3.0).archive = older
    found = samples(exposition(c).decode())
    maindb = {"host": "web1", "source": "maindb"}
    assert value(found, "backupd_source_last_drill_success", **maindb) == 0
    assert value(found, "backupd_source_drill_rto_seconds", **maindb) == 5.0
    assert c.catalogue.last_drills()[("web1", "maindb")].status == "fail"  # status, report


def test_a_drill_that_warned_still_restored_the_source(tmp_path: Path) -> None:
    """A warn drill (a restore with something to look at) marks its archive verified: the
    metrics agree, and BackupdNeverVerified stays silent for such a source."""
    c = make_ctx(tmp_path)
    now = utcnow()
    with c.catalogue.session() as s:
        src = source(s, "web2", "app", "sqlite")
        run(s, src, now - timedelta(days=1), original=1)
        drill(s, src, now - timedelta(hours=1), "warn", 2.0)
    found = samples(exposition(c).decode())
    app = {"host": "web2", "source": "app"}
    assert value(found, "backupd_source_last_verified_timestamp_seconds", **app) > 0
    assert value(found, "backupd_source_last_drill_success", **app) == 1


def test_a_source_of_several_items_is_as_good_as_its_worst_item_and_restores_in_their_sum(
    tmp_path: Path,
) -> None:
    """A PostgreSQL source is its globals and each database, one archive each: the drill of
    the item archived last (the globals) stood for the whole source (found in a new-user
    trial: the RTO shown was the globals' 0.4 s, the database took 2.0 s; a database that
    did not restore would have shown as passed). Another member: an older round's drill of
    the same items does not count; a newer drill of one item replaces its older one."""
    c = make_ctx(tmp_path)
    now = utcnow()
    with c.catalogue.session() as s:
        src = source(s, "web1", "maindb", "postgresql")
        old = run(s, src, now - timedelta(days=2), original=1)
        new = run(s, src, now - timedelta(days=1), original=1)
        s.flush()
        items = {}
        for r in (old, new):
            app = s.query(Archive).filter_by(run_id=r.id).one()
            globals_ = Archive(  # archived a minute after the database: the newest item
                **{k: getattr(app, k) for k in ("run_id", "source_id", "repository", "nbytes")},
                name=f"maindb-globals.{r.id}",
                item="globals",
                filename="globals.sql",
                created_at=app.created_at + timedelta(minutes=1),
                sha256="0" * 64,
                facts={},
            )
            s.add(globals_)
            items[r.id] = (app.name, globals_.name)
        for name, status, rto, minutes in (
            (items[old.id][0], "pass", 1.0, 50),  # the older round: not this point
            (items[new.id][0], "pass", 1.5, 40),  # drilled again below: replaced
            (items[new.id][0], "fail", 2.0, 9),
            (items[new.id][1], "pass", 0.4, 5),
        ):
            d = drill(s, src, now - timedelta(minutes=minutes), status, rto, detail=name)
            d.archive = name
    verdict = c.catalogue.last_drills()[("web1", "maindb")]
    assert (verdict.status, verdict.archive) == ("fail", items[new.id][0])
    assert verdict.rto_seconds == pytest.approx(2.4)  # 2.0 + 0.4, not the globals' alone
    found = samples(exposition(c).decode())
    maindb = {"host": "web1", "source": "maindb"}
    assert value(found, "backupd_source_last_drill_success", **maindb) == 0
    assert value(found, "backupd_source_drill_rto_seconds", **maindb) == pytest.approx(2.4)
