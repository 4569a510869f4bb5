"""Reading terraform/ offline: python-hcl2 parses every .tf file into plain dicts, and a few helpers
resolve the references the wiring tests follow (``${local.x}``, ``${var.x}``, ``each.value``).
No provider, no ``terraform init``: this checks what we wrote, not what Google will accept."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
_OPTIONS = SerializationOptions(
    strip_string_quotes=True, explicit_blocks=False, with_comments=False
)
_MERGE = re.compile(r"\$\{merge\(((?:local\.\w+,\s*)*local\.\w+)\)\}")
_WHOLE_REF = re.compile(r"^\$\{(local|var)\.([A-Za-z0-9_]+)\}$")
RESOURCE_REF = re.compile(r"\b((?:google|random|terraform)_[a-z0-9_]+)\.([a-z0-9_]+)")


def parse_file(path: Path) -> dict[str, Any]:
    """The file as plain dicts: a copy of its one parse (python-hcl2 takes ~0.1 s a file, and
    the tests read every file more than once)."""
    return copy.deepcopy(_parse(path, path.stat().st_mtime_ns))


@cache
def _parse(path: Path, mtime_ns: int) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        return hcl2.load(f, serialization_options=_OPTIONS)


@dataclass
class Config:
    """All .tf files of a directory, merged: resources[type][name] = body, and so on."""

    resources: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    data: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    terraform: list[dict[str, Any]] = field(default_factory=list)

    def resource(self, rtype: str, name: str) -> dict[str, Any]:
        return self.resources[rtype][name]

    def iter_resources(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for rtype, named in self.resources.items():
            for name, body in named.items():
                yield rtype, name, body

    def resolve(self, value: Any) -> Any:
        """``${local.x}`` -> the local's value; ``${var.x}`` -> the variable's default;
        ``${merge(local.a, local.b)}`` -> the maps merged. Other values come back unchanged
        (repeatedly, so a local naming a local resolves too)."""
        for _ in range(10):
            merged = _MERGE.fullmatch(value) if isinstance(value, str) else None
            if merged is not None:
                names = [n.strip().removeprefix("local.") for n in merged.group(1).split(",")]
                return {k: v for n in names for k, v in self.resolve(self.locals[n]).items()}
            match = _WHOLE_REF.match(value) if isinstance(value, str) else None
            if match is None:
                return value
            kind, name = match.groups()
            value = self.locals[name] if kind == "local" else self.variables[name].get("default")
        raise AssertionError(f"reference loop at {value!r}")


def _merge_labelled(target: dict[str, Any], blocks: list[dict[str, Any]], depth: int) -> None:
    for block in blocks:
        for label, body in block.items():
            if depth == 2:
                target.setdefault(label, {}).update(body)
            else:
                assert label not in target, f"{label} is declared twice"
                target[label] = body


def load_config(directory: Path = TERRAFORM) -> Config:
    config = Config()
    for path in sorted(directory.glob("*.tf")):
        parsed = parse_file(path)
        _merge_labelled(config.resources, parsed.get("resource", []), 2)
        _merge_labelled(config.data, parsed.get("data", []), 2)
        _merge_labelled(config.variables, parsed.get("variable", []), 1)
        _merge_labelled(config.outputs, parsed.get("output", []), 1)
        for block in parsed.get("locals", []):
            duplicated = set(block) & set(config.locals)
            assert not duplicated, f"locals declared twice: {duplicated}"
            config.locals.update(block)
        config.terraform.extend(parsed.get("terraform", []))
    return config


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The single nested block ``name`` of a resource body (hcl2 gives a one-item list)."""
    value = body[name]
    assert isinstance(value, list), f"{name} is not a block"
    assert len(value) == 1, f"{name} appears {len(value)} times"
    block: dict[str, Any] = value[0]
    return block


def walk(value: Any) -> Iterator[Any]:
    """Every scalar inside a parsed value, keys included."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)
    else:
        yield value


def string_list(expression: str) -> list[str]:
    """The string literals of an expression such as ``${toset(["a", "b"])}``."""
    return re.findall(r'"([^"]*)"', expression)
