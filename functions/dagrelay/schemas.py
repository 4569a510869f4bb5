"""Validation against the JSON Schemas of ``schema/``, in one place.

- ``pattern`` has the ECMA-262 semantics JSON Schema specifies (through ``regress``), not those
  of Python's ``re``: ``$`` matches only at the very end (``re`` also before a final newline) and
  ``\\d`` is ASCII. A pattern then means the same here, in PostgreSQL's CHECKs and in Terraform.
- ``$ref`` between the files resolves (``names.schema.json`` holds the identifier rules).
- ``problem`` names the most relevant error as ``where: message``; a key the schema does not
  allow is an unknown key, with the allowed key it is closest to (``pipline`` -> ``pipeline``),
  and preferred to the "required" error the same misspelling causes.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from typing import Any

import regress
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator
from referencing import Registry, Resource

from dagrelay.resources import schema_dir


@cache
def _compiled(pattern: str) -> regress.Regex:
    return regress.Regex(pattern)


def matches(pattern: str, value: str) -> bool:
    """Whether ``value`` matches ``pattern`` as JSON Schema's ``pattern`` keyword means it."""
    try:
        return _compiled(pattern).find(value) is not None
    except UnicodeEncodeError:  # a lone surrogate: not a string any of our patterns admits
        return False


def _pattern(
    validator: Validator, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not matches(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator: type[Validator] = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, {"pattern": _pattern}
)


@cache
def _registry() -> Registry[Any]:
    resources = []
    for path in sorted(schema_dir().rglob("*.schema.json")):
        contents = json.loads(path.read_text(encoding="utf-8"))
        resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources)


@cache
def validator(name: str) -> Validator:
    """The validator of ``schema/<name>``, e.g. ``messages/run_task.schema.json``."""
    contents = json.loads((schema_dir() / name).read_text(encoding="utf-8"))
    _Validator.check_schema(contents)
    return _Validator(contents, registry=_registry())


def for_schema(schema: Mapping[str, Any]) -> Validator:
    """A validator of a schema given in code (a handler's params schema)."""
    return _Validator(schema, registry=_registry())


def closest(word: str, choices: Sequence[str]) -> str | None:
    """The one of ``choices`` that ``word`` is most likely a misspelling of, if any is close."""
    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_keys(error: ValidationError) -> list[tuple[str, str | None]]:
    """For an ``additionalProperties: false`` error: each key not allowed, with the allowed key
    closest to it (None if none is close). Empty for any other error."""
    if error.validator != "additionalProperties" or error.validator_value is not False:
        return []
    allowed = [str(k) for k in error.schema.get("properties", {})]  # type: ignore[union-attr]
    instance = error.instance if isinstance(error.instance, dict) else {}
    extra = sorted((k for k in instance if k not in allowed), key=str)
    return [(str(k), closest(str(k), allowed)) for k in extra]


def error_message(error: ValidationError) -> str:
    """The error's message; for keys not allowed, ``unknown key 'x' (did you mean 'y'?)``."""
    unknown = unknown_keys(error)
    if not unknown:
        return error.message
    return "; ".join(
        f"unknown key {key!r}" + (f" (did you mean {near!r}?)" if near else "")
        for key, near in unknown
    )


def describe(error: ValidationError, top: str = "(top level)", message: str | None = None) -> str:
    """``where: message``, e.g. ``tasks/2/trigger_rule: 'x' is not one of [...]``."""
    where = "/".join(str(p) for p in error.absolute_path) or top
    return f"{where}: {message or error_message(error)}"


def misspelt(errors: Sequence[ValidationError]) -> list[ValidationError]:
    """The unknown-key errors that name a key they probably stand for: more telling than the
    "is a required property" error the same misspelling causes."""
    return [e for e in errors if any(near for _, near in unknown_keys(e))]


def problem(checker: Validator, instance: Any, top: str = "(top level)") -> str | None:
    """The most relevant error of ``instance`` as ``where: message``, or None if it is valid."""
    errors = list(checker.iter_errors(instance))
    error = next(iter(misspelt(errors)), None) or best_match(errors)
    return None if error is None else describe(error, top)
