"""The `--json` contract: every --json option has a documented schema, every schema is a
strict draft 2020-12 schema whose example conforms, and one helper prints them all.
(tests/e2e/test_json_contract.py validates the real outputs against the same schemas.)"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from backupd.cli.common import SCHEMA_VERSION, emit_json
from backupd.cli.main import cli
from tests.json_contract import array_paths, blocks, nullable_paths, problems
from tests.unit.test_docs import commands

BACKUPD = Path(__file__).resolve().parents[2] / "backupd"


def json_commands() -> set[str]:
    """Every command of the real click tree with a --json option, as "status", "key export"."""
    return {
        path.removeprefix("backupctl ")
        for path, cmd in commands(cli)
        if any("--json" in p.opts for p in cmd.params)
    }


def test_every_json_option_has_a_documented_schema_and_nothing_else_does() -> None:
    found = json_commands()
    assert {"status", "archives", "runs", "alerts", "drill", "config check", "key export"} <= found
    assert set(blocks("schema")) == found
    assert set(blocks("example")) == found


def test_every_command_prints_json_through_the_one_helper() -> None:
    modules = sorted((BACKUPD / "cli").glob("*.py"))
    assert len(modules) > 5
    for module in modules:
        if module.name != "common.py":
            assert "json.dumps" not in module.read_text(), f"{module.name}: use emit_json"


def objects(node: Any) -> list[dict[str, Any]]:
    """Every schema node (dict) that describes an object with properties."""
    if isinstance(node, list):
        return [o for n in node for o in objects(n)]
    if not isinstance(node, dict):
        return []
    found = [node] if "properties" in node else []
    return found + [o for v in node.values() for o in objects(v)]


@pytest.mark.parametrize("command", sorted(blocks("schema")))
def test_each_schema_is_strict_and_says_what_every_field_means(command: str) -> None:
    schema = blocks("schema")[command]
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == f"backupctl {command} --json"
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert next(iter(schema["properties"])) == "schema_version"
    for obj in objects(schema):
        where = f"{command}: {sorted(obj['properties'])}"
        assert obj.get("additionalProperties") is False, f"{where}: undocumented fields pass"
        assert sorted(obj["required"]) == sorted(obj["properties"]), f"{where}: keys optional"
        for name, field in obj["properties"].items():
            assert len(field.get("description", "")) > 10, f"{command}: {name} is not explained"
    assert array_paths(schema), f"{command}: the data is a list under a named key"


@pytest.mark.parametrize("command", sorted(blocks("schema")))
def test_each_documented_example_conforms_to_its_schema(command: str) -> None:
    example = blocks("example")[command]
    assert problems(blocks("schema")[command], example) == []
    assert next(iter(example)) == "schema_version"


def test_the_schemas_catch_drift() -> None:
    """The checks the contract relies on do fire: a new field, a missing one, a wrong type,
    a time not in UTC ISO form."""
    schema = blocks("schema")["runs"]
    run = blocks("example")["runs"]["runs"][0]

    def broken(**change: Any) -> list[str]:
        return problems(schema, {"schema_version": 1, "runs": [{**run, **change}]})

    assert broken() == []
    assert any("'duration' was unexpected" in p for p in broken(duration=3))
    assert any(
        "'nbytes' is a required property" in p
        for p in problems(
            schema, {"schema_version": 1, "runs": [{k: v for k, v in run.items() if k != "nbytes"}]}
        )
    )
    assert broken(nbytes="12 KiB") and broken(started_at="2026-11-25 02:14:09")
    assert broken(finished_at="2026-11-25T02:14:09Z") and broken(status="ok")
    assert problems(schema, {"schema_version": 2, "runs": []})
    assert problems(schema, [run])  # the old shape: a bare list


def test_nullable_fields_are_found_through_refs_and_unions() -> None:
    status = nullable_paths(blocks("schema")["status"])
    assert {
        "sources[].last_success",
        "sources[].last_drill",
        "sources[].last_drill.detail",
        "sources[].daemon",
        "queue[].pid",
    } <= status
    assert "sources[].stale" not in status and "queue[].since" not in status


@dataclass
class Row:
    name: str
    at: datetime
    path: Path
    done: datetime | None = None


def test_emit_json_prints_one_versioned_object_with_utc_times(
    capsys: pytest.CaptureFixture[str],
) -> None:
    east = timezone(timedelta(hours=5, minutes=30))
    emit_json(
        rows=[
            Row("a", datetime(2026, 11, 25, 7, 44, 9, 120_000, tzinfo=east), Path("/srv/k\u00e9y"))
        ],
        naive=datetime(2026, 1, 2, 3, 4, 5),
    )
    text = capsys.readouterr().out
    assert text.isascii()
    document = json.loads(text)
    assert list(document) == ["schema_version", "rows", "naive"]
    assert document["schema_version"] == 1
    assert document["rows"] == [
        {"name": "a", "at": "2026-11-25T02:14:09+00:00", "path": "/srv/k\u00e9y", "done": None}
    ]
    assert document["naive"] == "2026-01-02T03:04:05+00:00"  # naive is UTC, as in the catalogue


@pytest.mark.parametrize("value", [Decimal("1.5"), {1, 2}, object()])
def test_emit_json_refuses_a_value_without_a_documented_form(value: object) -> None:
    with pytest.raises(TypeError, match="no documented JSON form"):
        emit_json(rows=[value])


def test_time_pattern_in_every_schema_is_the_helpers() -> None:
    """One time format everywhere: the pattern of every schema's time matches what emit_json
    writes and nothing else."""
    for command, schema in blocks("schema").items():
        for name in ("time", "time_or_null"):
            if name in schema.get("$defs", {}):
                pattern = re.compile(schema["$defs"][name]["pattern"])
                assert pattern.match("2026-11-25T02:14:09+00:00"), command
                assert not pattern.match("2026-11-25T02:14:09.120000+00:00"), command
                assert not pattern.match("2026-11-25 02:14:09+00:00"), command


def test_config_check_json_on_an_invalid_config_is_still_its_object(tmp_path: Path) -> None:
    """A script asking `config check --json` of a config that does not load got plain
    text on stderr and nothing on stdout (found by a new-user trial): now the documented
    object, its one check the config, every problem in its detail; exit 2 as before.
    Without --json, the one error as every command says it."""
    from click.testing import CliRunner

    from tests.json_contract import conforming

    bad = tmp_path / "backupd.toml"
    bad.write_text('[store]\npath = "/srv/store"\n[bogus]\nx = 1\n')
    runner = CliRunner()
    out = runner.invoke(cli, ["--config", str(bad), "config", "check", "--json"])
    assert out.exit_code == 2
    [check] = conforming("config check", out.stdout)["checks"]
    assert (check["subject"], check["ok"], check["warning"]) == ("config", False, False)
    assert f"{bad}: bogus: unknown setting" in check["detail"]
    assert f"{bad}: hosts: declare at least one" in check["detail"]
    plain = runner.invoke(cli, ["--config", str(bad), "config", "check"])
    assert plain.exit_code == 2 and plain.stderr.startswith("backupctl: error: invalid config")
