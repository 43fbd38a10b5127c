"""The `--json` contract as docs/backupctl.md states it: the schema blocks and examples
found by their markers, validation with the jsonschema package, and a tally of what real
outputs showed (which nullable fields were seen null and not null, which lists non-empty).

A block is found by an HTML comment naming the command, right before a fenced json block:

    <!-- json-schema: config check -->
    ```json
    {"$schema": "https://json-schema.org/draft/2020-12/schema", ...}
    ```

(``json-example`` marks an example the same way.)
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

DOC = Path(__file__).resolve().parent.parent / "docs" / "backupctl.md"
_BLOCK = re.compile(r"<!-- json-(schema|example): ([a-z -]+?) -->\n```json\n(.*?)\n```", re.S)


def blocks(kind: str) -> dict[str, Any]:
    """``kind`` "schema" or "example": {command path ("status", "key export"): parsed JSON}."""
    found: dict[str, Any] = {}
    for what, command, text in _BLOCK.findall(DOC.read_text()):
        if what == kind:
            assert command not in found, f"two json-{kind} blocks for {command!r}"
            found[command] = json.loads(text)
    return found


def problems(schema: dict[str, Any], document: object) -> list[str]:
    """Every way ``document`` breaks ``schema``, one line each (empty: it conforms)."""
    validator = Draft202012Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def nullable_paths(schema: dict[str, Any]) -> set[str]:
    """Fields that may be null, as paths like ``sources[].last_drill.detail``."""
    return {path for path, node in _fields(schema, schema, "") if _nullable(schema, node)}


def array_paths(schema: dict[str, Any]) -> set[str]:
    return {path for path, node in _fields(schema, schema, "") if _is_array(schema, node)}


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:  # only local references: each block stands alone
        target: dict[str, Any] = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _branches(root: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    node = _resolve(root, node)
    alternatives = node.get("anyOf", []) + node.get("oneOf", [])
    return [node] + [b for alt in alternatives for b in _branches(root, alt)]


def _fields(root: dict[str, Any], node: dict[str, Any], path: str) -> Iterator[tuple[str, Any]]:
    for branch in _branches(root, node):
        for name, sub in branch.get("properties", {}).items():
            here = f"{path}.{name}" if path else name
            yield here, sub
            yield from _fields(root, sub, here)
        if "items" in branch:
            yield from _fields(root, branch["items"], f"{path}[]")


def _nullable(root: dict[str, Any], node: dict[str, Any]) -> bool:
    for b in _branches(root, node):
        types = b.get("type", [])
        if "null" in ([types] if isinstance(types, str) else types):
            return True
        if None in b.get("enum", []) or ("const" in b and b["const"] is None):
            return True
    return False


def _is_array(root: dict[str, Any], node: dict[str, Any]) -> bool:
    return any(b.get("type") == "array" for b in _branches(root, node))


class Seen:
    """What real outputs showed, per command: the values' nullness, the lists' lengths."""

    def __init__(self) -> None:
        self.nulls: dict[str, set[str]] = defaultdict(set)  # "status sources[].x" -> {null, value}
        self.filled: set[str] = set()  # "status sources": a list seen with entries

    def record(self, command: str, document: object, path: str = "") -> None:
        if isinstance(document, dict):
            for name, value in document.items():
                here = f"{path}.{name}" if path else name
                self.nulls[f"{command} {here}"].add("null" if value is None else "value")
                self.record(command, value, here)
        elif isinstance(document, list):
            if document:
                self.filled.add(f"{command} {path}")
            for value in document:
                self.record(command, value, f"{path}[]")


def conforming(command: str, stdout: str) -> Any:
    """The output of ``backupctl COMMAND --json``, parsed, once it matches its documented
    schema (AssertionError naming every difference otherwise)."""
    document = json.loads(stdout)
    found = problems(blocks("schema")[command], document)
    assert found == [], f"backupctl {command} --json differs from docs/backupctl.md: {found}"
    return document
