"""Pipelines in Python: a small typed API that builds exactly the ``PipelineSpec`` a YAML file
builds, so ``pipeline apply``, ``validate`` and ``export`` treat both alike::

    etl = Pipeline("etl", schedule=Schedule(cron="0 6 * * *"))

    class ExtractParams(BaseModel):
        rows: int = 10

    @etl.task(params=ExtractParams(rows=3), retries=2)
    def extract(ctx: HandlerContext[ExtractParams]) -> dict[str, int]:
        return {"rows": ctx.params.rows}

    check = etl.bigquery_check("check", sql="SELECT ...", parents=[extract])
    etl.add("export", handler="acme.export", params={"table": "t"}, parents=[check],
            pool="warehouse", pool_slots=2, priority=5, trigger_rule=TriggerRule.ALL_DONE)
    etl.add("each", handler="acme.one", parents=[extract],
            map=Map(over="extract.files", max_parallel=4, tolerated_failures="10%"))

    # started when both tables were updated for the same month (ARCHITECTURE.md, "Assets")
    report = Pipeline("report", on_assets=OnAssets(("bq://finance.sales", "bq://finance.costs"),
                                                   batch_id_template="{partition}"))
    report.noop("publish", updates=["gs://reports/monthly"])

Every key a pipeline file allows has its typed keyword (``TaskSettings``; ``Map``;
``Schedule``; ``OnAssets``), so mypy catches a misspelt setting and the test of parity
(tests/unit/test_python_parity.py) fails when the schema gains a key the API lacks.

A decorated step is registered as the handler ``<pipeline>.<task>`` when its module is imported,
so the deployed function must import that module (``handler_modules``). ``spec()`` checks every
field (the pipeline file's JSON Schema, trigger rules, the schedule) and names the task and the
field of each problem; the graph and the params are checked by ``validate``, before anything is
written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Generic, Literal, ParamSpec, TypedDict, TypeVar, Unpack, cast

from pydantic import BaseModel

from dagrelay import schemas
from dagrelay.errors import PipelineError
from dagrelay.handlers.registry import Handler, default_registry
from dagrelay.pipelines import on_assets as asset_schedules
from dagrelay.pipelines import schedule as schedules
from dagrelay.pipelines.on_assets import OnAssets
from dagrelay.pipelines.schedule import ScheduleSpec
from dagrelay.pipelines.spec import PipelineSpec, PipelineTask, schema_problems
from dagrelay.states import TriggerRule

Schedule = ScheduleSpec  # the schedule: section, with the same fields and defaults
Params = BaseModel | Mapping[str, Any] | None
A = ParamSpec("A")
R = TypeVar("R")


@dataclass(frozen=True)
class TaskRef:
    """A task added to a pipeline; pass it (or its name) in another task's ``parents``."""

    name: str


class Step(Generic[A, R]):
    """A decorated Python step: a task (pass it in ``parents``) that is still callable as the
    plain function (handy in unit tests)."""

    def __init__(self, name: str, function: Callable[A, R]) -> None:
        self.name = name
        self.function = function

    def __call__(self, *args: A.args, **kwargs: A.kwargs) -> R:
        return self.function(*args, **kwargs)


Parent = TaskRef | Step[..., Any] | str


@dataclass(frozen=True)
class Map:
    """Dynamic fan-out, the task's ``map:``: one instance per item of the list at ``over``
    (``<parent task>.<key of its output>``). A field left ``None`` is left out of the file
    (``max_items`` then defaults to 1024, ``max_parallel`` to no limit, ``tolerated_failures``
    to none); ``tolerated_failures`` is a count or a percentage such as ``"10%"``."""

    over: str
    max_items: int | None = None
    max_parallel: int | None = None
    tolerated_failures: int | str | None = None

    def document(self) -> dict[str, Any]:
        """The ``map:`` mapping of the pipeline file."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }


@dataclass(frozen=True)
class Deadline:
    """A deadline, the ``deadline:`` of the pipeline (its batches) or of a task: finished
    within ``within_s`` seconds ``after`` the batch's scheduled time (``"scheduled"``, the
    default; a batch that was not scheduled counts from its start) or its ``"start"``. A miss
    raises one alert; a task's ``fail`` also ends it ERROR (not for the pipeline's). A field
    left ``None`` is left out of the file."""

    within_s: int
    after: Literal["scheduled", "start"] | None = None
    fail: bool | None = None

    def document(self) -> dict[str, Any]:
        """The ``deadline:`` mapping of the pipeline file."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }


class TaskSettings(TypedDict, total=False):
    """A task's settings besides its name, handler and params: the pipeline file's keys and
    defaults (``PipelineTask``), with ``retries`` for ``max_retries`` (``YAML_KEYS``). One
    setting per key of the task in ``schema/pipeline.schema.json``:
    tests/unit/test_python_parity.py derives its cases from the schema, so a key added there
    and not here fails it."""

    parents: Sequence[Parent]
    description: str | None
    trigger_rule: TriggerRule
    retries: int
    retry_delay_s: int
    retry_backoff: float
    retry_max_delay_s: int
    timeout_s: int
    pool: str | None
    pool_slots: int
    priority: int
    max_active: int | None
    map: Map | None
    enabled: bool
    teardown: bool
    deadline: Deadline | None
    updates: Sequence[str]


YAML_KEYS = {"retries": "max_retries"}  # a Python setting whose file key differs


class Pipeline:
    """A pipeline built in Python: ``add`` (and the shortcuts ``task``, ``noop``,
    ``bigquery_query``, ``bigquery_check``) take a task's settings as ``TaskSettings``."""

    def __init__(
        self,
        name: str,
        *,
        description: str | None = None,
        schedule: Schedule | None = None,
        deadline: Deadline | None = None,
        on_assets: OnAssets | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.schedule = schedule
        self.deadline = deadline
        self.on_assets = on_assets
        self._tasks: list[PipelineTask] = []

    def add(
        self,
        name: str,
        *,
        handler: str,
        params: Params = None,
        **settings: Unpack[TaskSettings],
    ) -> TaskRef:
        """A task running the registered handler ``handler``."""
        self._tasks.append(_task(name, handler, params, settings))
        return TaskRef(name)

    def task(
        self,
        name: str | None = None,
        *,
        params: BaseModel | None = None,
        **settings: Unpack[TaskSettings],
    ) -> Callable[[Callable[A, R]], Step[A, R]]:
        """Decorate a function ``f(ctx: HandlerContext[Model]) -> dict | None`` as a task of
        this pipeline (named after the function unless ``name``), registered as the handler
        ``<pipeline>.<task>`` with ``type(params)`` as its params model."""

        def decorate(function: Callable[A, R]) -> Step[A, R]:
            task = name or function.__name__
            handler = f"{self.name}.{task}"
            model = type(params) if params is not None else None
            default_registry.register(handler, cast(Handler, function), params_model=model)
            self.add(task, handler=handler, params=params, **settings)
            return Step(task, function)

        return decorate

    def noop(
        self,
        name: str,
        *,
        output: Mapping[str, Any] | None = None,
        **settings: Unpack[TaskSettings],
    ) -> TaskRef:
        """``python.noop``: does nothing, returns ``output``."""
        params = {} if output is None else {"output": dict(output)}
        return self.add(name, handler="python.noop", params=params, **settings)

    def bigquery_query(
        self,
        name: str,
        *,
        sql: str | None = None,
        sql_file: str | None = None,
        destination: str | None = None,
        query_parameters: Mapping[str, Any] | None = None,
        write_disposition: str | None = None,
        create_disposition: str | None = None,
        time_partitioning: Mapping[str, Any] | None = None,
        clustering_fields: Sequence[str] | None = None,
        maximum_bytes_billed: int | None = None,
        wait_s: float | None = None,
        poll_after_s: float | None = None,
        **settings: Unpack[TaskSettings],
    ) -> TaskRef:
        """``bigquery.query``: run ``sql`` (or the file ``sql_file``), optionally into
        ``destination``; values only as query parameters (``@name``)."""
        params = _present(
            sql=sql,
            sql_file=sql_file,
            destination=destination,
            query_parameters=query_parameters,
            write_disposition=write_disposition,
            create_disposition=create_disposition,
            time_partitioning=time_partitioning,
            clustering_fields=list(clustering_fields) if clustering_fields else None,
            maximum_bytes_billed=maximum_bytes_billed,
            wait_s=wait_s,
            poll_after_s=poll_after_s,
        )
        return self.add(name, handler="bigquery.query", params=params, **settings)

    def bigquery_check(
        self,
        name: str,
        *,
        sql: str | None = None,
        sql_file: str | None = None,
        expect: str | Mapping[str, Any] | None = None,
        condition_column: str | None = None,
        query_parameters: Mapping[str, Any] | None = None,
        wait_s: float | None = None,
        poll_after_s: float | None = None,
        **settings: Unpack[TaskSettings],
    ) -> TaskRef:
        """``bigquery.check``: the query's result must be ``expect`` (``"empty"``, or the
        first row's values), or its ``condition_column`` true in every row."""
        params = _present(
            sql=sql,
            sql_file=sql_file,
            expect=expect,
            condition_column=condition_column,
            query_parameters=query_parameters,
            wait_s=wait_s,
            poll_after_s=poll_after_s,
        )
        return self.add(name, handler="bigquery.check", params=params, **settings)

    def spec(self, source: str | None = None) -> PipelineSpec:
        """The pipeline as ``load_pipeline`` gives it for the equivalent YAML file; fields the
        file's JSON Schema refuses are ``PipelineError`` naming the task and the field."""
        source = source or f"pipeline {self.name}"
        if self.schedule is not None:
            schedules.check_spec(self.schedule, source)
        if self.on_assets is not None:
            asset_schedules.check_spec(self.on_assets, source)
        spec = PipelineSpec(
            pipeline=self.name,
            tasks=tuple(self._tasks),
            description=self.description,
            source=source,
            schedule=self.schedule,
            deadline=self.deadline.document() if self.deadline is not None else None,
            on_assets=self.on_assets,
        )
        found = schema_problems(document(spec))
        if found:
            raise PipelineError([f"{source}: {_by_task(p, spec)}" for p in found])
        return spec


def document(spec: PipelineSpec) -> dict[str, Any]:
    """The pipeline file's mapping for ``spec`` (every task field written)."""
    data: dict[str, Any] = {"pipeline": spec.pipeline, "tasks": [_task_doc(t) for t in spec.tasks]}
    if spec.description is not None:
        data["description"] = spec.description
    if spec.schedule is not None:
        data["schedule"] = schedules.to_yaml(spec.schedule)
    if spec.deadline is not None:
        data["deadline"] = dict(spec.deadline)
    if spec.on_assets is not None:
        data["on_assets"] = asset_schedules.to_yaml(spec.on_assets)
    return data


def _task_doc(task: PipelineTask) -> dict[str, Any]:
    row = task.row()
    row["parents"] = list(task.parents)
    for key in ("description", "deadline"):
        if row[key] is None:
            del row[key]  # the file leaves it out rather than writing null
    return row


def _by_task(problem: str, spec: PipelineSpec) -> str:
    """``tasks/2/max_retries: ...`` as ``task 'load': max_retries: ...``."""
    parts = problem.split("/", 2)
    if parts[0] == "tasks" and len(parts) > 1 and parts[1].split(":")[0].isdigit():
        index = int(parts[1].split(":")[0])
        name = spec.tasks[index].name
        rest = parts[2] if len(parts) == 3 else parts[1].split(":", 1)[1].lstrip()
        return f"task {name!r}: {rest}"
    return problem


def _task(name: str, handler: str, params: Params, settings: TaskSettings) -> PipelineTask:
    """The ``PipelineTask`` of ``add``: the settings under their file keys; what is not given
    keeps ``PipelineTask``'s default (the tasks table's)."""
    given: dict[str, Any] = dict(settings)
    unknown = sorted(set(given) - TaskSettings.__optional_keys__)
    if unknown:
        allowed = sorted(TaskSettings.__optional_keys__)
        raise PipelineError([f"task {name!r}: {_unknown(key, allowed)}" for key in unknown])
    values = {YAML_KEYS.get(key, key): value for key, value in given.items()}
    values["parents"] = tuple(p if isinstance(p, str) else p.name for p in given.get("parents", ()))
    if "trigger_rule" in values:
        values["trigger_rule"] = _rule(name, values["trigger_rule"])
    elif values.get("teardown"):  # a teardown runs whatever happened (README, teardown tasks)
        values["trigger_rule"] = TriggerRule.ALL_DONE
    if "updates" in values:
        values["updates"] = tuple(values["updates"])
    if isinstance(values.get("map"), Map):
        values["map"] = values["map"].document()
    if isinstance(values.get("deadline"), Deadline):
        values["deadline"] = values["deadline"].document()
    return PipelineTask(name=name, handler=handler, params=_plain_params(params), **values)


def _unknown(key: str, allowed: list[str]) -> str:
    near = schemas.closest(key, allowed)
    hint = f" (did you mean {near!r}?)" if near else ""
    return f"{key!r} is not a task setting{hint}; the settings are {', '.join(allowed)}"


def _rule(task: str, rule: TriggerRule | str) -> TriggerRule:
    try:
        return TriggerRule(rule)
    except ValueError:
        allowed = ", ".join(r.value for r in TriggerRule)
        raise PipelineError(
            [f"task {task!r}: trigger_rule: {rule!r} is not one of {allowed}"]
        ) from None


def _plain_params(params: Params) -> dict[str, Any]:
    if params is None:
        return {}
    if isinstance(params, BaseModel):
        return params.model_dump(mode="json", exclude_unset=True)
    return dict(params)


def _present(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
