"""Fakes of the outside world (``SideEffects``) and how the runner calls handlers: per task
(``fakes``), and twice per attempt in duplicate mode, where a second run that fails, returns
something else or repeats a side effect ends the task ERROR, naming it."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from dagrelay.errors import NonRetryableError
from dagrelay.handlers.registry import Handler, HandlerContext, HandlerRegistry, default_registry


@dataclass(frozen=True)
class Effect:
    """A side effect a handler made through a ``SideEffects`` fake, with the run it came from."""

    name: str
    payload: Any
    key: str | None
    task: str | None  # None: recorded outside a handler run of the runner
    map_index: int | None


@dataclass
class _Run:
    """One run of a handler by the runner: the effects it applied."""

    task: str
    map_index: int | None
    applied: list[Effect] = field(default_factory=list)


_RUN: ContextVar[_Run | None] = ContextVar("dagrelay_testing_run", default=None)


class SideEffects:
    """A fake of the outside world a handler changes (a mail sent, a file uploaded, a row
    sent to an API): give it to the handler (a closure, a fake client built on it, a fake in
    ``fakes``) and have it call ``record`` where the real call would be.

    A ``key`` makes the effect idempotent, as an idempotency key, a job id or an object name
    does for a real service: an effect whose key was applied already is not applied again.
    In duplicate mode the runner runs each handler twice with the same context; a second run
    that applies an effect (no key, or a key that changes from run to run) repeats it, and the
    task ends ERROR saying so. Use ``context.idempotency_key`` (or a key derived from it) as
    the key. Effects are attributed to the handler run in progress in the runner's thread."""

    def __init__(self) -> None:
        self.applied: list[Effect] = []
        self._keys: set[str] = set()

    def record(self, name: str, payload: Any = None, *, key: str | None = None) -> bool:
        """Apply the effect ``name`` (with ``payload``) unless ``key`` was applied already;
        whether it was applied."""
        if key is not None and key in self._keys:
            return False
        run = _RUN.get()
        task, index = (run.task, run.map_index) if run is not None else (None, None)
        effect = Effect(name, payload, key, task, index)
        self.applied.append(effect)
        if key is not None:
            self._keys.add(key)
        if run is not None:
            run.applied.append(effect)
        return True

    def names(self) -> list[str]:
        return [e.name for e in self.applied]


def registry_for(fakes: Mapping[str, Handler], *, twice: bool) -> HandlerRegistry:
    """The default registry's handlers, each run as ``fakes[task]`` for a faked task, and
    twice per attempt when ``twice``."""
    default_registry.load_plugins()
    registry = HandlerRegistry(load=False)
    for name in default_registry.names():
        r = default_registry.get(name)
        function = _per_task(r.function, fakes)
        function = _twice(function) if twice else _once(function)
        registry.register(
            name, function, r.params_schema, r.poll, r.raw_params, params_model=r.params_model
        )
    return registry


def _per_task(function: Handler, fakes: Mapping[str, Handler]) -> Handler:
    if not fakes:
        return function

    def run(ctx: HandlerContext[Any]) -> Any:
        return fakes.get(ctx.task, function)(ctx)

    return run


def _in_run(function: Handler, ctx: HandlerContext[Any]) -> tuple[Any, _Run]:
    """Call the handler as one run: the effects it applies are attributed to it."""
    run = _Run(ctx.task, ctx.map_index)
    token = _RUN.set(run)
    try:
        return function(ctx), run
    finally:
        _RUN.reset(token)


def _once(function: Handler) -> Handler:
    def run(ctx: HandlerContext[Any]) -> Any:
        return run_once(function, ctx)

    return run


def _twice(function: Handler) -> Handler:
    def run(ctx: HandlerContext[Any]) -> Any:
        return run_twice(function, ctx)

    return run


def run_once(function: Handler, ctx: HandlerContext[Any]) -> Any:
    """The handler's output, its side effects attributed to this run."""
    return _in_run(function, ctx)[0]


def run_twice(function: Handler, ctx: HandlerContext[Any]) -> Any:
    """Run the handler twice with the same context, as a redelivery may; its output if the
    second run did what the first did, else ``NonRetryableError`` saying what changed."""
    first, _ = _in_run(function, ctx)
    redelivery = "its second run with the same context (as a redelivery makes it)"
    try:
        second, again = _in_run(function, ctx)
    except Exception as exc:
        raise NonRetryableError(
            f"task {ctx.task!r} is not idempotent: {redelivery} failed: {type(exc).__name__}: {exc}"
        ) from exc
    if again.applied:
        raise NonRetryableError(
            f"task {ctx.task!r} is not idempotent: {redelivery} " + _repeated(again.applied[0])
        )
    if second != first:
        raise NonRetryableError(
            f"task {ctx.task!r} is not idempotent: {redelivery} returned {second!r}, "
            f"the first {first!r}"
        )
    return second


def _repeated(effect: Effect) -> str:
    how = "without a key" if effect.key is None else f"under a new key {effect.key!r}"
    return (
        f"repeated the side effect {effect.name!r} ({how}); record it with "
        "key=context.idempotency_key (or a key derived from it) so a repeat is recognised"
    )
