"""Where pipelines come from: a YAML file, a Python file, or ``module:attribute``.

``load_specs`` turns any of them into specs; every problem is a ``PipelineError`` whose lines
start with the source's name. A Python file is imported under its package's dotted name (the
directories above it holding ``__init__.py``), with the first directory without one put on
``sys.path`` -- the name the deployed function imports it by, so the handlers its decorated
steps register are the same ones.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from dagrelay.errors import PipelineError
from dagrelay.pipelines.api import Pipeline
from dagrelay.pipelines.spec import PipelineSpec, load_pipeline

YAML_SUFFIXES = (".yaml", ".yml")


def load_specs(ref: str | Path) -> list[PipelineSpec]:
    """The pipelines of ``ref``: ``etl.yaml``, ``pipelines/etl.py`` (every Pipeline it
    defines at module level) or ``package.module:attribute`` (one Pipeline or PipelineSpec)."""
    text = str(ref)
    path = Path(text)
    if path.suffix in (*YAML_SUFFIXES, ".py") and not path.is_file():
        raise PipelineError([f"{text}: the file does not exist"])
    if path.suffix in YAML_SUFFIXES:
        return [load_pipeline(path)]
    if path.suffix == ".py":
        module = _import(module_name(path), text)
        return _specs_of_module(module, path.name)
    if ":" in text:
        module_part, _, attribute = text.partition(":")
        _put_on_path(Path.cwd())
        module = _import(module_part, text)
        if not hasattr(module, attribute):
            raise PipelineError([f"{text}: module {module_part!r} has no {attribute!r}"])
        return [_spec(getattr(module, attribute), text)]
    raise PipelineError(
        [f"{text}: expected a pipeline file (.yaml, .yml, .py) or module:attribute"]
    )


def module_name(path: Path) -> str:
    """The dotted name of a Python file, after putting its import root on ``sys.path``."""
    path = path.resolve()
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    _put_on_path(folder)
    return ".".join(parts)


def _put_on_path(folder: Path) -> None:
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def _import(name: str, source: str) -> ModuleType:
    """Import ``name``; a failure is one line: the error and where in the user's code."""
    try:
        return importlib.import_module(name)
    except PipelineError as exc:
        raise PipelineError([f"{source}: {p}" for p in exc.problems]) from None
    except Exception as exc:  # noqa: BLE001 - any error in the user's module is reported
        raise PipelineError([f"{source}: cannot import {name!r}: {_where(exc)}"]) from None


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    text = f"{type(exc).__name__}: {exc}"
    return f"{text} (at {frames[-1].filename}:{frames[-1].lineno})" if frames else text


def _specs_of_module(module: ModuleType, source: str) -> list[PipelineSpec]:
    found = [v for v in vars(module).values() if isinstance(v, Pipeline | PipelineSpec)]
    if not found:
        raise PipelineError([f"{source}: defines no Pipeline at module level"])
    return [_spec(value, source) for value in found]


def _spec(value: Any, source: str) -> PipelineSpec:
    if isinstance(value, Pipeline):
        return value.spec(source)
    if isinstance(value, PipelineSpec):
        return value
    raise PipelineError([f"{source}: is a {type(value).__name__}, not a Pipeline"])
