"""Built-in handlers: python.noop, python.sleep, python.fail, python.call."""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dagrelay.config import get_settings
from dagrelay.errors import NonRetryableError
from dagrelay.handlers import callables
from dagrelay.handlers.registry import HandlerContext, handler


@handler(
    "python.noop",
    {
        "type": "object",
        "properties": {"output": {"type": "object"}},
        "additionalProperties": False,
    },
)
def noop(ctx: HandlerContext) -> Mapping[str, Any] | None:
    """Does nothing; returns params.output if given (handy for wiring outputs in tests)."""
    output = ctx.params.get("output")
    return dict(output) if output is not None else None


@handler(
    "python.sleep",
    {
        "type": "object",
        "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 3600}},
        "required": ["seconds"],
        "additionalProperties": False,
    },
)
def sleep(ctx: HandlerContext) -> Mapping[str, Any]:
    seconds = float(ctx.params["seconds"])
    time.sleep(seconds)
    return {"slept_s": seconds}


class HandlerFailure(Exception):
    """What python.fail raises when asked for a retryable failure."""


@handler(
    "python.fail",
    {
        "type": "object",
        "properties": {
            "message": {"type": "string"},
            "retryable": {"type": "boolean"},
        },
        "additionalProperties": False,
    },
)
def fail(ctx: HandlerContext) -> Mapping[str, Any]:
    message = str(ctx.params.get("message", f"task {ctx.task} failed on purpose"))
    if ctx.params.get("retryable", True):
        raise HandlerFailure(message)
    raise NonRetryableError(message)


@handler(
    "python.call",
    {
        "type": "object",
        "properties": {
            "callable": {"type": "string", "pattern": r"^[A-Za-z_][\w.]*([.:][A-Za-z_]\w*)$"},
            "kwargs": {"type": "object"},
        },
        "required": ["callable"],
        "additionalProperties": False,
    },
)
def call(ctx: HandlerContext) -> Mapping[str, Any] | None:
    """Calls ``callable`` (``pkg.module.function`` or ``pkg.module:function``) with ``kwargs``,
    plus ``context`` when the function takes a parameter of that name — only a callable under
    a module prefix of the ``call_allowed_prefixes`` setting (``handlers.callables``)."""
    path = str(ctx.params["callable"])
    function = resolve_callable(path, get_settings().call_allowed_prefixes)
    kwargs = dict(ctx.params.get("kwargs") or {})
    if "context" in inspect.signature(function).parameters:
        kwargs["context"] = ctx
    result = function(**kwargs)
    if result is None or isinstance(result, Mapping):
        return result
    return {"result": result}


def resolve_callable(path: str, prefixes: Sequence[str]) -> Callable[..., Any]:
    """The callable ``path`` names, if ``prefixes`` allow it: the path is checked before its
    module is imported, and the object found is checked by its own ``__module__`` (a name
    imported into an allowed module from the standard library stays refused)."""
    refused = callables.refusal(path, prefixes)
    if refused is not None:
        raise NonRetryableError(refused)
    module_name, _, attribute = path.replace(":", ".").rpartition(".")
    try:
        module = importlib.import_module(module_name)
        function = getattr(module, attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise NonRetryableError(f"python.call: cannot import {path!r}: {exc}") from exc
    if not callable(function):
        raise NonRetryableError(f"python.call: {path!r} is not callable")
    defined_in = getattr(function, "__module__", None)
    refused = callables.module_refusal(defined_in or "", path, prefixes)
    if refused is not None:
        raise NonRetryableError(f"{refused} (it is defined in {defined_in!r})")
    return function  # type: ignore[no-any-return]
