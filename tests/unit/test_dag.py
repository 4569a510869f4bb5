"""DAG validation: every problem is reported and names the tasks involved."""

from __future__ import annotations

import itertools

import pytest

from dagrelay.engine.dag import TaskSpec, find_cycle, validate_dag

HANDLERS = ["python.noop", "python.call"]


def without_hints(problems: list[str]) -> list[str]:
    """The problems with the unknown-handler hint cut off (test_unknown_handler_hint has it)."""
    return [p.split(" (", 1)[0] if "unknown handler" in p else p for p in problems]


def spec(name: str, *parents: str, handler: str = "python.noop") -> TaskSpec:
    return TaskSpec(name=name, handler=handler, parents=parents)


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        pytest.param([spec("a")], [], id="single task"),
        pytest.param([spec("a"), spec("b", "a"), spec("c", "a", "b")], [], id="valid dag"),
        pytest.param([spec("b", "a"), spec("a")], [], id="parent defined after child is fine"),
        pytest.param([spec("a", "a")], ["task 'a' cannot depend on itself"], id="self edge"),
        pytest.param(
            [spec("a"), spec("b", "zz")], ["task 'b': unknown parent 'zz'"], id="unknown parent"
        ),
        pytest.param(
            [spec("a"), spec("a")], ["task 'a' is defined more than once"], id="duplicate task"
        ),
        pytest.param(
            [spec("a"), spec("b", "a", "a")],
            ["task 'b': a parent is listed twice"],
            id="duplicate parent",
        ),
        pytest.param(
            [spec("a", handler="bigquery.nope")],
            ["task 'a': unknown handler 'bigquery.nope'"],
            id="unknown handler",
        ),
        pytest.param([spec("a", "b"), spec("b", "a")], ["cycle: a -> b -> a"], id="two cycle"),
        pytest.param(
            [spec("a", "c"), spec("b", "a"), spec("c", "b"), spec("d", "c")],
            ["cycle: a -> b -> c -> a"],
            id="three cycle with a tail",
        ),
    ],
)
def test_validate_dag(tasks: list[TaskSpec], expected: list[str]) -> None:
    assert without_hints(validate_dag(tasks, HANDLERS)) == expected


def test_every_problem_is_reported() -> None:
    problems = validate_dag(
        [
            spec("a", "a", "ghost"),
            spec("b", "c"),
            spec("c", "b", handler="x.y"),
            spec("d"),
            spec("d"),
        ],
        HANDLERS,
    )
    problems = without_hints(problems)
    assert "task 'a' cannot depend on itself" in problems
    assert "task 'a': unknown parent 'ghost'" in problems
    assert "task 'c': unknown handler 'x.y'" in problems
    assert "task 'd' is defined more than once" in problems
    assert "cycle: b -> c -> b" in problems
    assert len(problems) == 5


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        pytest.param({}, None, id="empty"),
        pytest.param({"b": ["a"], "c": ["a", "b"]}, None, id="acyclic"),
        pytest.param({"a": ["a"]}, ["a", "a"], id="self loop"),
        pytest.param({"a": ["b"], "b": ["a"]}, ["a", "b", "a"], id="two cycle"),
        pytest.param(
            {"x": [], "b": ["a"], "c": ["b"], "a": ["c"]},
            ["a", "b", "c", "a"],
            id="three cycle",
        ),
        pytest.param(
            {"z": ["y"], "y": ["x"], "x": ["y"], "w": ["x"]},
            ["x", "y", "x"],
            id="cycle reached through a path",
        ),
    ],
)
def test_find_cycle(edges: dict[str, list[str]], expected: list[str] | None) -> None:
    assert find_cycle(edges) == expected


def test_find_cycle_path_follows_real_edges() -> None:
    """The cycle is a path parent -> child that closes on itself."""
    edges = {f"t{i}": [f"t{i - 1}"] for i in range(1, 30)} | {"t0": ["t29"]}
    cycle = find_cycle(edges)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert len(cycle) == 31
    for parent, child in itertools.pairwise(cycle):
        assert parent in edges[child]


@pytest.mark.parametrize(
    ("handler", "guess"),
    [
        ("python.nop", "did you mean 'python.noop'? else register it with @handler('python.nop')"),
        ("acme.export", "register it with @handler('acme.export')"),
    ],
)
def test_unknown_handler_hint(handler: str, guess: str) -> None:
    (problem,) = validate_dag([spec("a", handler=handler)], HANDLERS)
    assert problem.startswith(f"task 'a': unknown handler {handler!r} ({guess} in a module ")
    assert "DAGRELAY_HANDLER_MODULES (comma-separated)" in problem
    assert "\n" not in problem
