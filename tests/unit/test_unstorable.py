"""Values the engine produces that PostgreSQL's JSONB cannot hold are found before the database
refuses them, and named: a handler's output (the task ends ERROR at once), an item read from a
reference (its group ends ERROR, no instance created)."""

from __future__ import annotations

from typing import Any

import pytest

from dagrelay.engine.maps import Plan, plan
from dagrelay.errors import NonRetryableError
from dagrelay.handlers.registry import check_output
from dagrelay.messages import unstorable_json
from dagrelay.states import TaskStatus
from dagrelay.store.maps import MapSource


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"ok": [1, "two", {"three": 3.0}]}, None),
        ({"items": ["a", "b\x00"]}, "output at items/1: contains a NUL character"),
        ("x\x00", "output: contains a NUL character"),
        ({"k\x00": 1}, "output at k\\u0000 (a key): contains a NUL character"),
        ({"s": "\ud800"}, "output at s: contains a lone surrogate"),
        ({"n": float("nan")}, "output: holds NaN or Infinity"),
        ([float("inf")], "output: holds NaN or Infinity"),
    ],
)
def test_unstorable_json_names_where(value: Any, expected: str | None) -> None:
    problem = unstorable_json(value, "output")
    if expected is None:
        assert problem is None
    else:
        assert problem is not None
        assert problem.startswith(expected)


def test_an_output_the_database_cannot_hold_fails_the_task_at_once() -> None:
    with pytest.raises(NonRetryableError, match=r"task 't' output cannot be stored: output at a/0"):
        check_output({"a": ["\x00"]}, "t")
    assert check_output({"a": ["fine"]}, "t") == {"a": ["fine"]}


def source(ref: str) -> MapSource:
    return MapSource(1, "p", "b", 2, "each", {"over": "src.items"}, "string", None, ref)


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([{"n": 0}, {"n": 1, "s": "a\x00"}], "map.over 'src.items': item 1 at s: contains a NUL"),
        ([1, 2, float("nan")], "map.over 'src.items': item 2: holds NaN or Infinity"),
    ],
)
def test_a_referenced_item_the_database_cannot_hold_closes_the_group(
    items: list[Any], expected: str
) -> None:
    decided = plan(source("gs://b/items.jsonl"), lambda ref, limit: items)
    assert decided.status == TaskStatus.ERROR
    assert (decided.reason or "").startswith(expected)
    assert (decided.reason or "").endswith("; no instance was created")


def test_storable_referenced_items_expand() -> None:
    items = [{"n": 0}, {"n": 1}]
    assert plan(source("gs://b/items.jsonl"), lambda ref, limit: items) == Plan(
        tolerated=0, items=items
    )
