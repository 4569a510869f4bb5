"""One handler alone, without a database: ``run_handler`` builds its context as the engine
does (params resolved for the batch and item, then parsed by its params model), runs it (twice
with ``duplicate=True``, as a redelivery may) and returns its output as the engine would keep it.

    def test_score_flags_large_orders():
        out = run_handler(score_orders, {"threshold": 100}, parents={"extract": {...}})
        assert out == {"flagged": 2, ...}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from dagrelay.engine import maps
from dagrelay.engine import params as params_mod
from dagrelay.errors import DagrelayError
from dagrelay.handlers.registry import (
    Deferred,
    Handler,
    HandlerContext,
    Registration,
    check_deferred,
    check_output,
    default_registry,
)
from dagrelay.pipelines.api import Step
from dagrelay.testing.effects import run_once, run_twice


def run_handler(
    handler: str | Handler | Step[..., Any],
    params: BaseModel | Mapping[str, Any] | None = None,
    *,
    parents: Mapping[str, Any] | None = None,
    batch: str = "test",
    batch_params: Mapping[str, Any] | None = None,
    pipeline: str = "test",
    task: str | None = None,
    item: Any = None,
    map_index: int | None = None,
    attempt: int = 1,
    duplicate: bool = False,
) -> dict[str, Any] | Deferred | None:
    """Run ``handler`` (a registered name, a function registered with ``@handler`` or a
    pipeline's ``@task``, or any function of a context) once as the task ``task`` of batch
    ``batch``; ``parents`` are its parents' outputs by name, ``item``/``map_index`` make it an
    instance of a mapped task. ``params`` (a mapping, or an instance of its params model) are
    resolved as the engine resolves them (``{batch_id}``, batch params, ``{item}``) and parsed
    by its params model: a bad field raises ``NonRetryableError`` naming it. The handler's own
    exception propagates; its output is checked as the engine checks it (a JSON object it can
    store). ``duplicate=True`` runs it a second time with the same context, as a redelivery
    may, and raises ``NonRetryableError`` if that run fails, returns something else or
    repeats a side effect recorded in a ``SideEffects`` fake."""
    function, registration, default_task = _resolve(handler)
    task = task or default_task
    values = {**(batch_params or {}), "batch_id": batch, "pipeline": pipeline}
    if map_index is not None:
        values |= maps.item_values(item)
    raw = params.model_dump(mode="json") if isinstance(params, BaseModel) else dict(params or {})
    kept = registration.raw_params if registration else frozenset()
    resolved = {
        key: value if key in kept else params_mod.resolve(value, values, f"params.{key}")
        for key, value in raw.items()
    }
    context: HandlerContext[Any] = HandlerContext(
        pipeline=pipeline,
        batch_id=batch,
        task=task,
        attempt=attempt,
        run_id=1,
        params=registration.parse_params(resolved, task) if registration else resolved,
        batch_params=dict(batch_params or {}),
        parent_outputs=dict(parents or {}),
        item=item,
        map_index=map_index,
    )
    output = (run_twice if duplicate else run_once)(function, context)
    if isinstance(output, Deferred):
        return check_deferred(output, task)
    return check_output(output, task)


def _resolve(handler: str | Handler | Step[..., Any]) -> tuple[Handler, Registration | None, str]:
    """The function to call, its registration (None for a function never registered) and the
    task name it runs as by default."""
    if isinstance(handler, str):
        named = default_registry.get(handler)
        return named.function, named, "task"
    if isinstance(handler, Step):
        function: Callable[..., Any] = handler.function
        step = default_registry.registration_of(function)
        if step is None:
            raise DagrelayError(f"step {handler.name!r} is not registered as a handler")
        return step.function, step, handler.name
    return handler, default_registry.registration_of(handler), "task"
