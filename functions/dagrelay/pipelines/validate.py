"""Checks of a pipeline beyond its file's JSON Schema: the graph (``dagrelay.engine.dag``),
retry settings, and each task's params against its handler's ``params_schema``."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from dagrelay.config import get_settings
from dagrelay.engine import params as params_mod
from dagrelay.engine.dag import TaskSpec, validate_dag
from dagrelay.errors import NonRetryableError, PipelineError
from dagrelay.handlers import callables
from dagrelay.handlers.registry import HandlerRegistry, Registration, default_registry
from dagrelay.pipelines.spec import PipelineSpec
from dagrelay.states import TriggerRule

CALL_HANDLER = "python.call"


def registered_handlers(registry: HandlerRegistry = default_registry) -> dict[str, Registration]:
    """{name: registration} of every handler (built-ins, configured modules, entry points)."""
    return {name: registry.get(name) for name in registry.names()}


def problems(
    spec: PipelineSpec,
    known_handlers: Mapping[str, Registration] | Iterable[str],
    *,
    call_prefixes: Sequence[str] | None = None,
) -> list[str]:
    """Every problem with the pipeline: the graph (cycles, self-edges, unknown parents and
    handlers, duplicates), retry settings, each task's params against its handler's
    ``params_schema`` (skipped for params with ``{placeholders}``, known only per batch), and
    ``python.call`` callables outside ``call_prefixes`` (default: the setting)."""
    handlers = known_handlers if isinstance(known_handlers, Mapping) else {}
    found = validate_dag(dag_tasks(spec), known_handlers)
    found += retry_problems(spec) + map_problems(spec) + teardown_problems(spec)
    found += _params_problems(spec, handlers) + call_problems(spec, call_prefixes)
    return [f"{spec.source}: {p}" for p in found]


def validate(
    spec: PipelineSpec,
    known_handlers: Mapping[str, Registration] | Iterable[str],
    *,
    call_prefixes: Sequence[str] | None = None,
) -> None:
    """``PipelineError`` with all of ``problems(...)``, if any."""
    found = problems(spec, known_handlers, call_prefixes=call_prefixes)
    if found:
        raise PipelineError(found)


def dag_tasks(spec: PipelineSpec) -> list[TaskSpec]:
    """The file's tasks as the graph checks see them."""
    return [TaskSpec(t.name, t.handler, t.parents, t.params) for t in spec.tasks]


def retry_problems(spec: PipelineSpec) -> list[str]:
    """Retry settings the database would refuse."""
    found = [
        f"task {t.name!r}: retry_backoff must be a finite number"
        for t in spec.tasks
        if not math.isfinite(t.retry_backoff)
    ]
    return found + [
        f"task {t.name!r}: retry_max_delay_s ({t.retry_max_delay_s}) is less than "
        f"retry_delay_s ({t.retry_delay_s})"
        for t in spec.tasks
        if t.retry_max_delay_s < t.retry_delay_s
    ]


def call_problems(spec: PipelineSpec, prefixes: Sequence[str] | None = None) -> list[str]:
    """``python.call`` tasks whose callable the deployment does not allow (``prefixes``,
    default: the ``call_allowed_prefixes`` setting), naming the callable and the setting."""
    if prefixes is None:
        prefixes = get_settings().call_allowed_prefixes
    found = []
    for task in spec.tasks:
        path = task.params.get("callable") if task.handler == CALL_HANDLER else None
        if isinstance(path, str):
            refused = callables.refusal(path, prefixes)
            if refused is not None:
                found.append(f"task {task.name!r}: {refused}")
    return found


def map_problems(spec: PipelineSpec) -> list[str]:
    """A mapped task maps over an output of one of its own parents."""
    found = []
    for task in spec.tasks:
        if task.map is None:
            continue
        parent = str(task.map["over"]).split(".", 1)[0]
        if parent not in task.parents:
            found.append(
                f"task {task.name!r}: map.over {task.map['over']!r} names {parent!r}, "
                "which is not one of its parents"
            )
    return found


def teardown_problems(spec: PipelineSpec) -> list[str]:
    """A teardown task runs whatever its parents' outcome (all_done) and is not mapped."""
    found = []
    for task in spec.tasks:
        if not task.teardown:
            continue
        if task.trigger_rule != TriggerRule.ALL_DONE:
            found.append(
                f"task {task.name!r}: a teardown task runs whatever its parents' outcome: its "
                f"trigger_rule is all_done, not {task.trigger_rule.value}"
            )
        if task.map is not None:
            found.append(f"task {task.name!r}: a teardown task cannot have a map")
    return found


def _params_problems(spec: PipelineSpec, handlers: Mapping[str, Registration]) -> list[str]:
    found: list[str] = []
    for task in spec.tasks:
        registration = handlers.get(task.handler)
        if registration is None:
            continue
        try:
            resolved = params_mod.resolve(task.params, {})
        except NonRetryableError:
            continue  # has {placeholders}: checked when a batch resolves them
        try:
            registration.check_params(resolved, task.name)
        except NonRetryableError as exc:
            found.append(str(exc))
    return found
