"""The identifier rules (pipeline and task names, batch ids, parameter keys), read from their
one definition, ``schema/names.schema.json``. Full-string matches, as JSON Schema means them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Final

from dagrelay import schemas
from dagrelay.resources import schema_dir

_DEFS = json.loads((schema_dir() / "names.schema.json").read_text(encoding="utf-8"))["$defs"]

NAME_PATTERN: Final[str] = _DEFS["name"]["pattern"]
BATCH_ID_PATTERN: Final[str] = _DEFS["batch_id"]["pattern"]
PARAM_KEY_PATTERN: Final[str] = _DEFS["param_key"]["pattern"]


def is_name(value: str) -> bool:
    return schemas.matches(NAME_PATTERN, value)


def is_batch_id(value: str) -> bool:
    return schemas.matches(BATCH_ID_PATTERN, value)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when one of ``choices`` is close to ``word``, else ``""``."""
    near = schemas.closest(word, list(choices))
    return f" (did you mean {near!r}?)" if near else ""
