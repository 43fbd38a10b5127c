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
