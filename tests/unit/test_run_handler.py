"""dagrelay.testing.run_handler: one handler alone, without a database -- params resolved and
parsed by its model as the engine does, the context a task gets, its output checked, and the
duplicate mode's second run."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field

from dagrelay.errors import NonRetryableError
from dagrelay.handlers.registry import Deferred, HandlerContext, handler
from dagrelay.pipelines.api import Map, Pipeline
from dagrelay.testing import SideEffects, run_handler


class LoadParams(BaseModel):
    table: str
    limit: int = Field(10, gt=0)


@handler("tst_run_handler.load", params=LoadParams)
def load(ctx: HandlerContext[LoadParams]) -> dict[str, Any]:
    rows = sum(o["rows"] for o in ctx.parent_outputs.values())
    return {
        "table": ctx.params.table,
        "rows": min(rows, ctx.params.limit),
        "batch": ctx.batch,
        "task": ctx.task,
    }


def test_params_are_resolved_and_parsed_by_the_model() -> None:
    out = run_handler(
        load,
        {"table": "sales_{batch_id}", "limit": 5},
        parents={"a": {"rows": 3}, "b": {"rows": 4}},
        batch="2024-03",
        task="load_sales",
    )
    assert out == {"table": "sales_2024-03", "rows": 5, "batch": "2024-03", "task": "load_sales"}


def test_a_registered_name_and_a_model_instance_work_too() -> None:
    out = run_handler("tst_run_handler.load", LoadParams(table="t"), parents={"a": {"rows": 2}})
    assert out == {"table": "t", "rows": 2, "batch": "test", "task": "task"}


def test_bad_params_are_refused_naming_the_field() -> None:
    with pytest.raises(NonRetryableError, match=r"task 'task' \(tst_run_handler.load\).*limit"):
        run_handler(load, {"table": "t", "limit": 0})


def test_an_instance_of_a_mapped_task_gets_its_item() -> None:
    p = Pipeline("tst_run_handler_map")

    @p.task("square", map=Map(over="src.items"))
    def square(ctx: HandlerContext) -> dict[str, Any]:
        return {"y": ctx.item * ctx.item, "index": ctx.map_index, "label": ctx.params["label"]}

    out = run_handler(square, {"label": "n{item}"}, item=4, map_index=2)
    assert out == {"y": 16, "index": 2, "label": "n4"}


def test_output_is_checked_as_the_engine_checks_it() -> None:
    with pytest.raises(NonRetryableError, match="returned list, not a mapping"):
        run_handler(lambda ctx: [1, 2])  # type: ignore[arg-type, return-value]
    deferred = Deferred({"job": "j1"}, poll_after_s=5)
    assert run_handler(lambda ctx: deferred) == deferred


def test_duplicate_runs_it_twice_and_names_a_repeated_side_effect() -> None:
    sent = SideEffects()

    def keyed(ctx: HandlerContext) -> dict[str, Any]:
        sent.record("mail", key=ctx.idempotency_key)
        return {"ok": True}

    def unkeyed(ctx: HandlerContext) -> dict[str, Any]:
        sent.record("mail")
        return {"ok": True}

    assert run_handler(keyed, duplicate=True) == {"ok": True}
    assert len(sent.applied) == 1
    with pytest.raises(NonRetryableError, match="repeated the side effect 'mail'"):
        run_handler(unkeyed, duplicate=True)
