"""The registries that find every kind and store job in this package, and the
configuration loader that validates each source's options with its kind.

A kind is a module of this package that defines ``KIND`` (and ``RESTORE`` when its dumps
restore into a database server); a store job one that defines ``JOB``. Adding one is
adding a module: nothing is listed by hand (a database kind's ``RESTORE.scratch`` is the
server its drills restore into).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from backupd.config.load import Config, KindModels
from backupd.config.load import load_config as _load_config
from jobs.base import DatabaseKind, MaintenanceJob, SourceKind


def load_config(path: Path | str | None = None) -> Config:
    """The configuration at ``path`` (None: the default file), every source's options
    validated by its kind; ConfigError listing every problem."""
    return _load_config(path, kinds=kind_models())


@cache
def kind_models() -> KindModels:
    """What configuration validates sources and restore targets with."""
    return KindModels(
        options={name: kind.options_model for name, kind in registry().items()},
        databases=frozenset(database_kinds()),
    )


def _defined(attribute: str) -> list[tuple[ModuleType, Any]]:
    """(module, value) for every module of this package that defines ``attribute``."""
    import jobs

    modules = (
        importlib.import_module(f"jobs.{i.name}") for i in pkgutil.iter_modules(jobs.__path__)
    )
    return [(m, getattr(m, attribute)) for m in modules if hasattr(m, attribute)]


@cache
def registry() -> dict[str, SourceKind[Any]]:
    """Every kind defined in this package, by name (modules that define ``KIND``)."""
    return {kind.name: kind for _m, kind in _defined("KIND")}


@cache
def database_kinds() -> dict[str, DatabaseKind[Any]]:
    """Kinds whose dumps restore into a database server (modules that define ``RESTORE``)."""
    return {m.KIND.name: restore for m, restore in _defined("RESTORE")}


@cache
def maintenance_registry() -> dict[str, MaintenanceJob]:
    """Every maintenance job defined in this package (modules that define ``JOB``)."""
    return {job.name: job for _m, job in _defined("JOB")}
