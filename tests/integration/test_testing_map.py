"""dagrelay.testing at the edges: a mapped task's result is one result per item (its output,
status, attempts and index), and duplicate mode fails a handler that repeats a side effect
through the fakes it is given (``SideEffects``) without ``context.idempotency_key``, even when
its result stays the same."""

from __future__ import annotations

from typing import Any

import pytest

from dagrelay.handlers.registry import HandlerContext
from dagrelay.pipelines.api import Map, Pipeline
from dagrelay.testing import ItemResult, PipelineRunner, SideEffects

pytestmark = pytest.mark.integration


def squares() -> Pipeline:
    """src -> square (mapped over src.items, one failure tolerated) -> total."""
    p = Pipeline("tst_map")
    src = p.noop("src", output={"items": [1, 2, 3]})

    @p.task(
        "square",
        parents=[src],
        map=Map(over="src.items", tolerated_failures=1),
        retries=1,
        retry_delay_s=5,
    )
    def square(ctx: HandlerContext) -> dict[str, Any]:
        if ctx.item == 2 and ctx.attempt == 1:
            raise RuntimeError("flaky")
        if ctx.item == 3:
            raise RuntimeError("item 3 is bad")
        return {"y": ctx.item * ctx.item}

    @p.task("total", parents=[square])
    def total(ctx: HandlerContext) -> dict[str, Any]:
        return {"sum": sum(o["y"] for o in ctx.parent_outputs["square"] if o)}

    return p


def test_a_mapped_task_returns_one_result_per_item(dagrelay_runner: PipelineRunner) -> None:
    result = dagrelay_runner.run(squares(), "b1", shuffle=True, seed=5)

    assert result.status == "SUCCESS"
    square = result["square"]
    assert square.status == "SUCCESS"
    assert square.items == (
        ItemResult(index=0, item=1, status="SUCCESS", attempts=1, output={"y": 1}, error=None),
        ItemResult(index=1, item=2, status="SUCCESS", attempts=2, output={"y": 4}, error=None),
        ItemResult(
            index=2,
            item=3,
            status="ERROR",
            attempts=2,
            output=None,
            error="RuntimeError: item 3 is bad",
        ),
    )
    assert square.attempts == 5, "a mapped task's attempts are its items' attempts"
    assert square.output == [{"y": 1}, {"y": 4}, None], "what its children see, by index"
    assert square.error == "1 of 3 items failed (1 tolerated)"
    assert result["total"].output == {"sum": 5}
    assert result["src"].items == (), "a task that is not mapped has no items"
    assert result["src"].attempts == 1


def test_a_mapped_task_in_duplicate_mode_runs_each_item_twice_per_attempt(
    dagrelay_runner: PipelineRunner,
) -> None:
    result = dagrelay_runner.run(squares(), "b2", duplicate=True, shuffle=True, seed=9)
    assert result.status == "SUCCESS"
    assert [i.status for i in result["square"].items] == ["SUCCESS", "SUCCESS", "ERROR"]


def mailer(effects: SideEffects, *, keyed: bool) -> Pipeline:
    p = Pipeline("tst_fx")

    @p.task("send")
    def send(ctx: HandlerContext) -> dict[str, Any]:
        key = ctx.idempotency_key if keyed else None
        effects.record("send_mail", {"to": "ops", "batch": ctx.batch_id}, key=key)
        return {"sent": True}  # the same result on every run: only the effect repeats

    return p


def test_duplicate_mode_fails_a_handler_that_repeats_a_side_effect(
    dagrelay_runner: PipelineRunner,
) -> None:
    effects = SideEffects()
    result = dagrelay_runner.run(mailer(effects, keyed=False), "plain", duplicate=True)

    assert result.status == "FAILED"
    assert result["send"].status == "ERROR"
    error = result["send"].error or ""
    assert "task 'send' is not idempotent" in error
    assert "repeated the side effect 'send_mail'" in error
    assert "context.idempotency_key" in error
    assert len(effects.applied) == 2, "the fake saw the effect happen twice"


def test_duplicate_mode_passes_a_handler_keyed_by_its_idempotency_key(
    dagrelay_runner: PipelineRunner,
) -> None:
    effects = SideEffects()
    result = dagrelay_runner.run(mailer(effects, keyed=True), "keyed", duplicate=True)

    assert result.status == "SUCCESS", result.tasks
    [sent] = effects.applied
    assert (sent.name, sent.task, sent.payload) == (
        "send_mail",
        "send",
        {"to": "ops", "batch": "keyed"},
    )


def test_a_fake_given_to_a_mapped_task_is_checked_per_item(
    dagrelay_runner: PipelineRunner,
) -> None:
    """Through ``fakes``: each instance has its own idempotency key, so a keyed effect is
    applied once per item; an unkeyed one fails the item that repeated it."""
    keyed, plain = SideEffects(), SideEffects()

    def upload(effects: SideEffects, *, use_key: bool) -> Any:
        def fake(ctx: HandlerContext) -> dict[str, Any]:
            key = ctx.idempotency_key if use_key else None
            effects.record("upload", ctx.item, key=key)
            return {"y": 0}

        return fake

    ok = dagrelay_runner.run(
        squares(), "ok", duplicate=True, fakes={"square": upload(keyed, use_key=True)}
    )
    assert ok.status == "SUCCESS"
    assert sorted(e.payload for e in keyed.applied) == [1, 2, 3]
    assert {e.map_index for e in keyed.applied} == {0, 1, 2}

    bad = dagrelay_runner.run(
        squares(), "bad", duplicate=True, fakes={"square": upload(plain, use_key=False)}
    )
    assert bad.status == "FAILED"
    assert all(i.status == "ERROR" for i in bad["square"].items)
    assert "repeated the side effect 'upload'" in (bad["square"].items[0].error or "")
