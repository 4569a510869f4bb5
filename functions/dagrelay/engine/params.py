"""Resolution of ``{placeholder}`` references in task params from the batch's values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from dagrelay.errors import NonRetryableError

# {name}, and {item.key} for a key of a mapped task's item
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*|item\.[A-Za-z_][A-Za-z0-9_]*)\}")


def resolve(value: Any, values: Mapping[str, Any], where: str = "params") -> Any:
    """Replace ``{name}`` in every string inside ``value`` (recursively through dicts and lists)
    by ``values[name]``; ``{{`` and ``}}`` are literal braces. A string that is exactly one
    placeholder takes the value's own type. An unknown name is a NonRetryableError naming it."""
    if isinstance(value, str):
        return _resolve_string(value, values, where)
    if isinstance(value, Mapping):
        return {k: resolve(v, values, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, values, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _resolve_string(text: str, values: Mapping[str, Any], where: str) -> Any:
    whole = _PLACEHOLDER.fullmatch(text)
    if whole and whole.group(1):
        return _lookup(whole.group(1), values, where)

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "{{":
            return "{"
        if match.group(0) == "}}":
            return "}"
        return str(_lookup(match.group(1), values, where))

    return _PLACEHOLDER.sub(substitute, text)


def _lookup(name: str, values: Mapping[str, Any], where: str) -> Any:
    if name not in values:
        known = ", ".join(sorted(values)) or "none"
        raise NonRetryableError(f"{where}: unknown placeholder {{{name}}} (known: {known})")
    return values[name]
