"""The pure rules of asset schedules: which pending events start a batch, its id, its params."""

from __future__ import annotations

import pytest

from dagrelay.engine.asset_rules import (
    AssetError,
    Event,
    Waiting,
    check_template,
    decide,
    groups,
    name_problem,
    render,
)
from dagrelay.pipelines.on_assets import OnAssets, problems

A, B = "bq://finance.sales", "gs://bucket/expenses/"


def event(event_id: int, asset: str, partition: str | None = None, batch: str = "x") -> Event:
    return Event(event_id, asset, "up", batch, "up.load", partition)


@pytest.mark.parametrize(
    ("pending", "expected"),
    [
        ([], []),
        ([event(1, A)], []),  # one of two assets
        ([event(1, A), event(2, B)], [(1, 2)]),
        ([event(1, A), event(2, A), event(3, B)], [(1, 2, 3)]),  # every pending event goes
        ([event(1, A, "03"), event(2, B, "04")], []),  # different partitions
        ([event(1, A, "03"), event(2, B, "04"), event(3, B, "03")], [(1, 3)]),
        (
            [event(2, B, "04"), event(1, A, "04"), event(3, A, "03"), event(4, B, "03")],
            [(1, 2), (3, 4)],
        ),  # in the order of their first event
        ([event(1, A), event(2, B, "03")], []),  # no partition is a partition of its own
        ([event(1, A), event(2, "other"), event(3, B)], [(1, 3)]),  # not waited for: left out
    ],
)
def test_groups(pending: list[Event], expected: list[tuple[int, ...]]) -> None:
    found = groups([A, B], pending)
    assert [tuple(e.event_id for e in g) for g in found] == expected


def test_decide_numbers_runs_and_carries_the_events_in_the_params() -> None:
    schedule = Waiting("profit", (A, B), "assets-{n}", runs=4)
    firings, found = decide(schedule, [event(1, A, batch="s1"), event(2, B, batch="e1")])
    assert found == []
    (firing,) = firings
    assert (firing.run, firing.batch_id) == (5, "assets-5")
    assert firing.message["pipeline"] == "profit"
    assert firing.message["params"] == {
        "asset_events": [
            {"asset": A, "pipeline": "up", "batch_id": "s1", "task": "up.load", "event_id": 1},
            {"asset": B, "pipeline": "up", "batch_id": "e1", "task": "up.load", "event_id": 2},
        ]
    }
    assert firing.message["triggered_by"] == f"assets: {A}, {B}"


def test_a_partitioned_group_names_its_batch_and_passes_its_partition_on() -> None:
    schedule = Waiting("profit", (A, B), "{partition}")
    (firing,), _ = decide(schedule, [event(1, A, "2024-03"), event(2, B, "2024-03")])
    assert firing.batch_id == "2024-03"
    assert firing.message["params"]["asset_partition"] == "2024-03"


def test_a_group_that_cannot_have_a_batch_id_is_a_problem_and_the_next_still_runs() -> None:
    schedule = Waiting("profit", (A, B), "{partition}")
    pending = [event(1, A), event(2, B), event(3, A, "2024-04"), event(4, B, "2024-04")]
    firings, found = decide(schedule, pending)
    assert [f.batch_id for f in firings] == ["2024-04"]
    assert [f.run for f in firings] == [1]
    assert len(found) == 1
    assert "needs a partition" in found[0]


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("assets-{n}", None),
        ("{partition}", None),
        ("m{partition}-{n}", None),
        ("fixed", "use {n} or {partition}"),
        ("{month}", "'month' is not one of {n}, {partition}"),
        ("{n:03d}", "is not one of"),
        ("{n", "expected '}'"),
    ],
)
def test_check_template(template: str, problem: str | None) -> None:
    if problem is None:
        check_template(template)
    else:
        with pytest.raises(AssetError, match=problem.replace("{", r"\{").replace("}", r"\}")):
            check_template(template)


def test_render_refuses_what_is_not_a_batch_id() -> None:
    assert render("{partition}", 1, "2024-03") == "2024-03"
    with pytest.raises(AssetError, match="not a batch id"):
        render("{partition}", 1, "a b/c")


@pytest.mark.parametrize(
    ("asset", "ok"),
    [(A, True), ("free name", True), ("", False), (" x", False), ("x" * 1025, False)],
)
def test_asset_names(asset: str, ok: bool) -> None:
    assert (name_problem(asset) is None) is ok


def test_on_assets_problems() -> None:
    assert problems(OnAssets((A, B))) == []
    assert problems(OnAssets((A, A), "fixed")) == [
        "assets: a name is listed twice",
        "batch_id_template 'fixed': use {n} or {partition}",
    ]
