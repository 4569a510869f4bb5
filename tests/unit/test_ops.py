"""dagrelay.ops.verbs: backfill plans, rerun targets, attempt runs, explanations (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from dagrelay.errors import DagrelayError
from dagrelay.ops import verbs as ops
from dagrelay.ops.verbs import Action, Reprocess
from dagrelay.pipelines.export import export_yaml, topological_order
from dagrelay.pipelines.spec import PipelineSpec, PipelineTask
from dagrelay.states import TriggerRule
from dagrelay.store.reads import RootCause, root_causes

D1, D2, D3, D4, D5 = (date(2024, 3, day) for day in range(1, 6))


def test_backfill_dates_include_both_ends() -> None:
    assert ops.backfill_dates(date(2024, 2, 28), D1) == [date(2024, 2, 28), date(2024, 2, 29), D1]
    assert ops.backfill_dates(D1, D1) == [D1]


@pytest.mark.parametrize(
    ("first", "last", "message"),
    [
        pytest.param(D2, D1, "--to 2024-03-01 is before --from 2024-03-02", id="backwards"),
        pytest.param(date(2000, 1, 1), date(2020, 1, 1), "7306 days is more", id="too long"),
    ],
)
def test_backfill_dates_refuse(first: date, last: date, message: str) -> None:
    with pytest.raises(DagrelayError, match=message):
        ops.backfill_dates(first, last)


def test_batch_params() -> None:
    assert ops.batch_params(D1) == {
        "date": "2024-03-01",
        "ds": "2024-03-01",
        "ds_nodash": "20240301",
    }


EXISTING = {
    "2024-03-02": "SUCCESS",
    "2024-03-03": "FAILED",
    "2024-03-04": "CANCELLED",
    "2024-03-05": "RUNNING",
}


@pytest.mark.parametrize(
    ("reprocess", "actions"),
    [
        pytest.param(
            Reprocess.NONE,
            [Action.START, Action.SKIP, Action.SKIP, Action.SKIP, Action.SKIP],
            id="none",
        ),
        pytest.param(
            Reprocess.FAILED,
            [Action.START, Action.SKIP, Action.RERUN_FAILED, Action.RERUN_FAILED, Action.SKIP],
            id="failed",
        ),
        pytest.param(
            Reprocess.ALL,
            [
                Action.START,
                Action.RERUN_ALL,
                Action.RERUN_FAILED,
                Action.RERUN_FAILED,
                Action.SKIP,
            ],
            id="all",
        ),
    ],
)
def test_plan_backfill(reprocess: Reprocess, actions: list[Action]) -> None:
    plan = ops.plan_backfill([D1, D2, D3, D4, D5], EXISTING, reprocess)

    assert [p.action for p in plan] == actions
    assert [p.batch_id for p in plan] == [d.isoformat() for d in (D1, D2, D3, D4, D5)]
    assert [p.existing for p in plan] == [None, "SUCCESS", "FAILED", "CANCELLED", "RUNNING"]


def test_plan_reasons() -> None:
    plan = ops.plan_backfill([D1, D2, D3, D5], EXISTING, Reprocess.NONE)
    assert [p.reason for p in plan] == [
        "no batch yet",
        "succeeded (--reprocess all to redo)",
        "failed (--reprocess failed to redo)",
        "running now",
    ]


@pytest.mark.parametrize(
    ("launched", "statuses", "running"),
    [
        pytest.param([], {}, [], id="nothing launched"),
        pytest.param(["a", "b"], {}, ["a", "b"], id="not processed yet counts as running"),
        pytest.param(
            ["a", "b", "c"], {"a": "SUCCESS", "b": "RUNNING", "c": "FAILED"}, ["b"], id="mixed"
        ),
    ],
)
def test_in_flight(launched: list[str], statuses: dict[str, str], running: list[str]) -> None:
    assert ops.in_flight(launched, statuses) == running


DIAMOND = {"b": ["a"], "c": ["a"], "d": ["b", "c"]}


@pytest.mark.parametrize(
    ("rows", "parents", "everything", "targets"),
    [
        pytest.param(
            {"a": "SUCCESS", "b": "ERROR", "c": "SUCCESS", "d": "UPSTREAM_FAILED"},
            DIAMOND,
            False,
            ["b"],
            id="one failure: its descendants come with it",
        ),
        pytest.param(
            {"a": "SUCCESS", "b": "ERROR", "c": "ERROR", "d": "UPSTREAM_FAILED"},
            DIAMOND,
            False,
            ["b", "c"],
            id="two failures",
        ),
        pytest.param(
            {"a": "ERROR", "b": "UPSTREAM_FAILED", "c": "UPSTREAM_FAILED", "d": "UPSTREAM_FAILED"},
            DIAMOND,
            False,
            ["a"],
            id="root failed",
        ),
        pytest.param(
            {"a": "ERROR", "b": "ERROR", "c": "SUCCESS", "d": "UPSTREAM_FAILED"},
            DIAMOND,
            False,
            ["a"],
            id="a failure below another (all_done) is reset by the upper one",
        ),
        pytest.param(
            {"a": "SUCCESS", "b": "CANCELLED", "c": "SUCCESS", "d": None},
            DIAMOND,
            False,
            ["b"],
            id="cancelled",
        ),
        pytest.param(
            {"a": "SUCCESS", "b": "SUCCESS", "c": "SUCCESS", "d": None},
            DIAMOND,
            False,
            ["b"],
            id="cancelled before a child was created: rerun one parent",
        ),
        pytest.param(
            {"a": "SUCCESS", "b": None, "c": None, "d": None},
            DIAMOND,
            False,
            ["a"],
            id="cancelled after the root",
        ),
        pytest.param(
            {"a": "SUCCESS", "b": "SUCCESS", "c": "SUCCESS", "d": "SUCCESS"},
            DIAMOND,
            False,
            [],
            id="nothing failed",
        ),
        pytest.param(
            {"a": "SUCCESS", "b": "SUCCESS", "c": "SUCCESS", "d": "SUCCESS"},
            DIAMOND,
            True,
            ["a"],
            id="everything: the root",
        ),
        pytest.param(
            {"x": "SUCCESS", "y": "SUCCESS", "z": "SUCCESS"},
            {"z": ["x", "y"]},
            True,
            ["x", "y"],
            id="everything: two roots",
        ),
        pytest.param(
            {"a": None, "b": "SUCCESS", "c": None, "d": "SUCCESS"},
            DIAMOND,
            True,
            ["b"],
            id="everything in a start_task batch: its start task",
        ),
    ],
)
def test_rerun_targets(
    rows: dict[str, str | None],
    parents: dict[str, list[str]],
    everything: bool,
    targets: list[str],
) -> None:
    assert ops.rerun_targets(rows, parents, everything=everything) == targets


def attempt(n: int, *, current: bool, minute: int) -> dict[str, Any]:
    return {
        "attempt": n,
        "started_at": datetime(2024, 3, 1, 0, minute, tzinfo=UTC),
        "finished_at": None,
        "outcome": "ERROR",
        "error": None,
        "worker": "w",
        "traceback": None,
        "current": current,
    }


@pytest.mark.parametrize(
    ("attempts", "runs"),
    [
        pytest.param([], [], id="none"),
        pytest.param([(1, True), (2, True)], [1, 1], id="retries of one run"),
        pytest.param([(1, False), (1, True)], [1, 2], id="one rerun"),
        pytest.param([(1, False), (2, False), (1, False), (1, True)], [1, 1, 2, 3], id="two"),
    ],
)
def test_number_runs(attempts: list[tuple[int, bool]], runs: list[int]) -> None:
    rows = [attempt(n, current=c, minute=i) for i, (n, c) in enumerate(attempts)]
    assert [e.run for e in ops.number_runs(rows)] == runs


def failed(name: str, status: str, log_id: int, cause: int | None = None) -> dict[str, Any]:
    return {
        "log_id": log_id,
        "task": name,
        "status": status,
        "attempt": 2 if status == "ERROR" else 0,
        "error": f"{name} broke" if status == "ERROR" else None,
        "root_cause_log_id": cause,
    }


def cause(task: str | None, took_down: list[str]) -> RootCause:
    if task is None:
        return RootCause(task=None, status=None, error=None, attempts=0, took_down=took_down)
    return RootCause(
        task=task, status="ERROR", error=f"{task} broke", attempts=2, took_down=took_down
    )


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param([], [], id="nothing failed"),
        pytest.param(
            [failed("b", "ERROR", 2), failed("d", "UPSTREAM_FAILED", 4, 2)],
            [cause("b", ["d"])],
            id="diamond",
        ),
        pytest.param(
            [
                failed("z", "UPSTREAM_FAILED", 9, 1),
                failed("a", "ERROR", 1),
                failed("c", "ERROR", 3),
                failed("y", "UPSTREAM_FAILED", 8, 1),
                failed("ok", "SUCCESS", 4),
            ],
            [cause("a", ["y", "z"]), cause("c", [])],
            id="an error that took nothing down",
        ),
        pytest.param(
            [failed("x", "UPSTREAM_FAILED", 5, None), failed("b", "ERROR", 2)],
            [cause("b", []), cause(None, ["x"])],
            id="cause gone",
        ),
    ],
)
def test_root_causes(rows: list[dict[str, Any]], expected: list[RootCause]) -> None:
    """dagrelay.store.reads.root_causes: pure, the part of the read model explain draws."""
    assert root_causes(rows) == expected


# -- export (export_yaml) ---------------------------------------------------------


def task(name: str, *parents: str, **fields: Any) -> PipelineTask:
    return PipelineTask(name=name, handler="python.noop", parents=parents, **fields)


def test_topological_order_breaks_ties_by_name() -> None:
    spec = PipelineSpec(
        "p", (task("d", "c", "b"), task("c", "a"), task("b", "a"), task("z"), task("a"))
    )
    ordered = topological_order(spec)
    assert [t.name for t in ordered.tasks] == ["a", "b", "c", "d", "z"]
    assert ordered.tasks[3].parents == ("b", "c")


def test_export_writes_only_what_differs_from_the_defaults() -> None:
    spec = PipelineSpec(
        "p",
        (
            task(
                "b",
                "a",
                params={"z": 1, "a": {"y": [1, "2024-03-01"], "x": None}},
                max_retries=3,
                retry_backoff=3,
                enabled=False,
                pool="bq",
            ),
            task("a", description="stored and exported", trigger_rule=TriggerRule.ALL_DONE),
        ),
    )
    assert export_yaml(spec) == (
        "pipeline: p\n"
        "tasks:\n"
        "- name: a\n"
        "  description: stored and exported\n"
        "  handler: python.noop\n"
        "  trigger_rule: all_done\n"
        "- name: b\n"
        "  handler: python.noop\n"
        "  parents:\n"
        "  - a\n"
        "  params:\n"
        "    a:\n"
        "      x: null\n"
        "      y:\n"
        "      - 1\n"
        "      - '2024-03-01'\n"
        "    z: 1\n"
        "  max_retries: 3\n"
        "  retry_backoff: 3.0\n"
        "  pool: bq\n"
        "  enabled: false\n"
    )
