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
