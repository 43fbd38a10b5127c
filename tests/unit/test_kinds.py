"""Every source kind in jobs/ implements the whole interface and is found by the registry."""

from __future__ import annotations

import inspect

from jobs.base import Options
from jobs.registry import registry


def test_every_kind_implements_the_interface() -> None:
    kinds = registry()
    assert set(kinds) == {"postgresql", "mariadb", "sqlite", "directory", "volume"}
    for name, kind in kinds.items():
        assert kind.name == name
        assert issubclass(kind.options_model, Options)
        for method in ("plan", "hold"):
            assert inspect.ismethod(getattr(kind, method, None)), f"{name} lacks {method}"
            params = list(inspect.signature(getattr(kind, method)).parameters)
            assert params[0] == "options", f"{name}.{method} takes options first"


def test_options_say_the_droplet_prefix_and_programs_of_their_source() -> None:
    """Actions ask the options (``remote_prefix``, ``program``), never probe their fields."""
    kinds = registry()
    pg = kinds["postgresql"].options_model.model_validate(
        {"sudo_user": "postgres", "pg_dump": "/opt/pg/bin/pg_dump"}
    )
    assert pg.remote_prefix() == ("sudo", "-n", "-u", "postgres", "--")
    pg = kinds["postgresql"].options_model.model_validate(
        {"databases": ["app"], "globals": False, "pg_dump": "/opt/pg/bin/pg_dump"}
    )
    [unit] = kinds["postgresql"].plan(pg, None)  # type: ignore[arg-type]  # asks nothing
    assert unit.programs == ("/opt/pg/bin/pg_dump", "psql")  # what config check looks for
    tree = kinds["directory"].options_model.model_validate(
        {"path": "/srv/www", "sudo": True, "rsync": "/usr/local/bin/rsync"}
    )
    assert tree.remote_prefix() == ("sudo", "-n")
    assert tree.program("rsync") == "/usr/local/bin/rsync"
    plain = kinds["directory"].options_model.model_validate({"path": "/srv/www"})
    assert plain.remote_prefix() == () and plain.program("rsync") == "rsync"
    sqlite = kinds["sqlite"].options_model.model_validate(
        {"path": "/srv/app.db", "container": "app", "sqlite3": "sqlite3.40"}
    )
    assert sqlite.remote_prefix() == ("docker", "exec", "-i", "app")


def test_every_database_kind_brings_its_own_scratch_server() -> None:
    """A drill restores into the kind's own throwaway server (``RESTORE.scratch``):
    adding a database kind touches its module only, no table in backupd/actions."""
    from pathlib import Path

    from jobs.registry import database_kinds

    kinds = database_kinds()
    assert set(kinds) == {"postgresql", "mariadb"}
    pid_files = set()
    for name, restore in kinds.items():
        server = restore.scratch
        assert not Path(server.pid_file).is_absolute(), name
        assert server.stop_signal > 0 and inspect.ismethod(server.start), name
        pid_files.add(server.pid_file)
    assert len(pid_files) == len(kinds)  # a crash's leftovers are told apart by pid file
    actions = Path(__file__).resolve().parents[2] / "backupd" / "actions"
    for module in actions.glob("*.py"):
        text = module.read_text()
        for name in kinds:
            assert f'"{name}":' not in text, f"{module.name} keeps a table keyed by {name}"
