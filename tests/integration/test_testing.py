"""dagrelay.testing runs a whole batch in-process on the real PostgreSQL: fakes per task,
shuffled and duplicated delivery that catches a handler that is not idempotent, and the same
ERROR / UPSTREAM_FAILED outcome the engine gives on the stack."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import BaseModel

from dagrelay.errors import NonRetryableError
from dagrelay.handlers.registry import HandlerContext
from dagrelay.pipelines.api import Pipeline
from dagrelay.states import TriggerRule
from dagrelay.testing import PipelineRunner

pytestmark = pytest.mark.integration

_counter = itertools.count(1)
_seen: set[str] = set()


class Rows(BaseModel):
    rows: int = 1


def diamond() -> Pipeline:
    p = Pipeline("tst_diamond")

    @p.task("tst_diamond.extract", params=Rows(rows=3), retries=1, retry_delay_s=60)
    def extract(ctx: HandlerContext[Rows]) -> dict[str, Any]:
        if ctx.attempt == 1:
            raise RuntimeError("flaky source")  # retried after 60 s: the runner's clock moves
        return {"rows": ctx.params.rows}

    left = p.noop("tst_diamond.left", output={"side": "l"}, parents=[extract])
    right = p.noop("tst_diamond.right", output={"side": "r"}, parents=[extract])

    @p.task("tst_diamond.join", parents=[left, right])
    def join(ctx: HandlerContext) -> dict[str, Any]:
        return {"sides": sorted(o["side"] for o in ctx.parent_outputs.values())}

    return p


def test_a_batch_runs_whole_with_retries_and_parent_outputs(
    dagrelay_runner: PipelineRunner,
) -> None:
    result = dagrelay_runner.run(diamond(), "2024-03")
    assert result.status == "SUCCESS"
    assert result["tst_diamond.extract"].attempts == 2
    assert result["tst_diamond.extract"].output == {"rows": 3}
    assert result["tst_diamond.join"].output == {"sides": ["l", "r"]}


def test_a_fake_replaces_one_task(dagrelay_runner: PipelineRunner) -> None:
    result = dagrelay_runner.run(
        diamond(), fakes={"tst_diamond.extract": lambda ctx: {"rows": ctx.params.rows * 10}}
    )
    assert result["tst_diamond.extract"].output == {"rows": 30}
    assert result["tst_diamond.extract"].attempts == 1
    assert result.status == "SUCCESS"


def counting() -> Pipeline:
    p = Pipeline("tst_counting")

    @p.task("tst_counting.count")
    def count(ctx: HandlerContext) -> dict[str, Any]:
        return {"n": next(_counter)}  # a new value on every run: not idempotent

    @p.task("tst_counting.keyed", parents=[count])
    def keyed(ctx: HandlerContext) -> dict[str, Any]:
        _seen.add(ctx.idempotency_key)  # the same effect however often it runs
        return {"key": ctx.idempotency_key}

    return p


def test_duplicate_delivery_catches_a_handler_that_is_not_idempotent(
    dagrelay_runner: PipelineRunner,
) -> None:
    once = dagrelay_runner.run(counting(), "once")
    twice = dagrelay_runner.run(counting(), "twice", duplicate=True, shuffle=True, seed=7)

    assert once.status == "SUCCESS"
    assert twice.status == "FAILED"
    error = twice["tst_counting.count"].error or ""
    assert twice["tst_counting.count"].status == "ERROR"
    assert "task 'tst_counting.count' is not idempotent" in error
    assert twice["tst_counting.keyed"].status == "UPSTREAM_FAILED"
    keyed = dagrelay_runner.run(
        counting(), "keyed", duplicate=True, fakes={"tst_counting.count": lambda ctx: {"n": 0}}
    )
    assert keyed.status == "SUCCESS"
    assert keyed.deliveries == 4  # every message twice; the duplicates are ignored


def failing() -> Pipeline:
    p = Pipeline("tst_failing")
    a = p.noop("tst_failing.a")
    b = p.add("tst_failing.b", handler="python.fail", params={"retryable": False}, parents=[a])
    c = p.noop("tst_failing.c", parents=[b])
    p.noop("tst_failing.d", parents=[c])
    p.noop("tst_failing.cleanup", parents=[b], trigger_rule=TriggerRule.ALL_DONE)
    return p


def test_a_failure_ends_as_it_does_on_the_stack(dagrelay_runner: PipelineRunner) -> None:
    result = dagrelay_runner.run(failing(), shuffle=True, duplicate=True, seed=3)
    assert result.status == "FAILED"
    assert result.statuses() == {
        "tst_failing.a": "SUCCESS",
        "tst_failing.b": "ERROR",
        "tst_failing.c": "UPSTREAM_FAILED",
        "tst_failing.d": "UPSTREAM_FAILED",
        "tst_failing.cleanup": "SUCCESS",
    }
    assert result["tst_failing.b"].error == (
        "non-retryable NonRetryableError: task tst_failing.b failed on purpose"
    )  # no engine frames: the traceback is kept with the attempt
    assert result["tst_failing.b"].attempts == 1
    assert result["tst_failing.d"].root_cause_task == "tst_failing.b"


def test_invalid_params_are_refused_before_the_batch(dagrelay_runner: PipelineRunner) -> None:
    p = Pipeline("tst_params")
    p.add("tst_params.s", handler="python.sleep", params={"seconds": -1})
    with pytest.raises(NonRetryableError, match=r"task 'tst_params.s' \(python.sleep\): params"):
        dagrelay_runner.run(p)
