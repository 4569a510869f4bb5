"""Checked by mypy (``make typecheck``), never run: the Python API's settings are typed, so a
misspelt setting or a wrong type is a type error. Each line below must stay an error; mypy's
``warn_unused_ignores`` (strict) fails the check if one stops being one."""

from __future__ import annotations

from dagrelay.pipelines.api import Map, Pipeline, Schedule
from dagrelay.states import TriggerRule

p = Pipeline("typing", schedule=Schedule(cron="@daily", overlap="wait"))
a = p.noop("typing.a", retries=2, pool="warehouse", pool_slots=2, priority=5, max_active=1)
p.add(
    "typing.b",
    handler="python.noop",
    parents=[a],
    trigger_rule=TriggerRule.ALL_DONE,
    map=Map(over="typing.a.items", max_items=10, max_parallel=2, tolerated_failures="10%"),
)

p.noop("typing.c", retires=2)  # type: ignore[call-arg]
p.noop("typing.d", priority="high")  # type: ignore[arg-type]
p.noop("typing.e", trigger_rule="all_done")  # type: ignore[arg-type]
p.noop("typing.f", map={"over": "typing.a.items"})  # type: ignore[arg-type]
p.add("typing.g", handler="python.noop", max_parallel=2)  # type: ignore[call-arg]
Map(over="typing.a.items", max_paralel=2)  # type: ignore[call-arg]
Schedule(cron="@daily", overlap="sometimes")  # type: ignore[arg-type]
