"""The shipped alerting rules and dashboard (issue 17): valid for Prometheus' own tool,
their unit tests pass (each alert fires when it should, and not before), and every series
they name is one backupd exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from backupd.actions.context import Context
from backupd.actions.metrics import exposition
from backupd.catalogue.models import utcnow
from jobs.registry import load_config
from tests.harness.example_report import run, source, write_config

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
NAME = re.compile(r"\bbackupd_[a-z_]+")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=MONITORING, capture_output=True, text=True, timeout=120
    )


def test_the_rules_are_valid_and_their_unit_tests_pass() -> None:
    checked = promtool("check", "rules", "backupd.rules.yml")
    assert checked.returncode == 0 and "SUCCESS: 12 rules found" in checked.stdout, checked
    tested = promtool("test", "rules", "backupd.rules.test.yml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_a_rule_test_that_expects_the_wrong_thing_fails(tmp_path: Path) -> None:
    """promtool's tests can fail: a stale source expected silent is reported."""
    text = (MONITORING / "backupd.rules.test.yml").read_text()
    wrong = text.replace(
        "      - eval_time: 30m\n        alertname: BackupdSourceStale",
        "      - eval_time: 5m\n        alertname: BackupdSourceStale",
        1,
    )
    assert wrong != text
    (tmp_path / "backupd.rules.yml").write_text((MONITORING / "backupd.rules.yml").read_text())
    (tmp_path / "wrong.test.yml").write_text(wrong)
    failed = subprocess.run(
        ["promtool", "test", "rules", "wrong.test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode != 0 and "BackupdSourceStale" in failed.stdout + failed.stderr


def test_every_series_the_rules_and_dashboard_name_is_exported(tmp_path: Path) -> None:
    (tmp_path / "eu.conf").write_text("type = s3\n")
    (tmp_path / "eu.conf").chmod(0o600)
    offsite = '[offsite.remotes.eu]\npath = "b/fleet"\nrclone = { file = "eu.conf" }\n'
    ctx = Context(load_config(write_config(tmp_path, {"web1": {"app": "sqlite"}}, offsite)))
    (tmp_path / "store").mkdir()
    with ctx.catalogue.session() as s:  # one archive: the per-item series exist
        run(s, source(s, "web1", "app", "sqlite"), utcnow(), original=1)
    exported = {
        s.name for f in text_string_to_metric_families(exposition(ctx).decode()) for s in f.samples
    }
    rules = NAME.findall((MONITORING / "backupd.rules.yml").read_text())
    dashboard = json.loads((MONITORING / "backupd.dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    named = set(rules) | {n for e in exprs for n in NAME.findall(e)}
    assert len(named) > 8
    assert named <= exported, named - exported
    # Grafana asks for the data source on import, and every panel uses the one chosen
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {"${DS_PROMETHEUS}"}
