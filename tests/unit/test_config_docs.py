"""Configs are written from docs/config.md (the last review's lesson): every key the code
accepts is documented there, and every key a [hosts.X.sources.Y] table documents exists."""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

from pydantic import BaseModel

from backupd.config.load import Config, HostConfig, SourceConfig
from jobs.registry import registry

DOCS = (Path(__file__).resolve().parents[2] / "docs" / "config.md").read_text()
# a key in a table or in the text (`key`), a section in a heading ([section])
DOCUMENTED = set(re.findall(r"`([a-z_][a-z0-9_]*)`", DOCS)) | set(
    re.findall(r"\[([a-z_]+)[.\]]", DOCS)
)


def keys(model: type[BaseModel], skip: Collection[str] = ()) -> set[str]:
    return set(model.model_fields) - set(skip)


def test_every_source_kind_option_is_documented() -> None:
    missing = {
        f"{name}.{key}"
        for name, kind in registry().items()
        for key in keys(kind.options_model)
        if key not in DOCUMENTED
    }
    assert missing == set()


def test_every_host_source_and_top_level_key_is_documented() -> None:
    internal = {"name", "host", "options", "sources", "path", "catalogue_url"}  # not keys
    missing = {
        key
        for model in (SourceConfig, HostConfig, Config)
        for key in keys(model, internal)
        if key not in DOCUMENTED
    }
    assert missing == set()


def test_every_section_key_is_documented() -> None:
    missing = set()
    for section, field in Config.model_fields.items():
        model = field.annotation
        candidates = getattr(model, "__args__", (model,))
        for candidate in candidates:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                own = keys(candidate, {"name", "options", "sources"})  # the table's own name
                missing |= {f"{section}.{k}" for k in own if k not in DOCUMENTED}
    assert missing == set()
