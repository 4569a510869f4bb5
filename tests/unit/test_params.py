"""Placeholder resolution in task params."""

from __future__ import annotations

from typing import Any

import pytest

from dagrelay.engine.params import resolve
from dagrelay.errors import NonRetryableError

VALUES = {"batch_id": "2024-03", "year": 2024, "tables": ["a", "b"], "flag": True, "none": None}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("plain", "plain", id="no placeholder"),
        pytest.param("{batch_id}", "2024-03", id="whole string"),
        pytest.param("{year}", 2024, id="whole string keeps int"),
        pytest.param("{tables}", ["a", "b"], id="whole string keeps list"),
        pytest.param("{flag}", True, id="whole string keeps bool"),
        pytest.param("{none}", None, id="whole string keeps null"),
        pytest.param("sales_{batch_id}.csv", "sales_2024-03.csv", id="inside text"),
        pytest.param("{year}/{batch_id}", "2024/2024-03", id="two placeholders"),
        pytest.param("{{batch_id}}", "{batch_id}", id="escaped braces"),
        pytest.param("{{{batch_id}}}", "{2024-03}", id="escaped around placeholder"),
        pytest.param("{ batch_id }", "{ batch_id }", id="not a placeholder: spaces"),
        pytest.param("{1abc}", "{1abc}", id="not a placeholder: digit first"),
        pytest.param("{}", "{}", id="empty braces"),
        pytest.param(
            {"q": "SELECT @x", "table": "t_{year}", "n": 3},
            {"q": "SELECT @x", "table": "t_2024", "n": 3},
            id="dict",
        ),
        pytest.param(
            {"files": ["{batch_id}.csv", {"y": "{year}"}]},
            {"files": ["2024-03.csv", {"y": 2024}]},
            id="nested list and dict",
        ),
        pytest.param(42, 42, id="number untouched"),
        pytest.param(None, None, id="null untouched"),
    ],
)
def test_resolve(value: Any, expected: Any) -> None:
    assert resolve(value, VALUES) == expected


@pytest.mark.parametrize(
    ("value", "where"),
    [
        pytest.param("{missing}", "params: unknown placeholder {missing}", id="top"),
        pytest.param({"a": {"b": "x{missing}"}}, "params.a.b: unknown placeholder", id="dict path"),
        pytest.param({"l": ["ok", "{missing}"]}, r"params.l\[1\]: unknown", id="list path"),
    ],
)
def test_unknown_placeholder_names_it_and_where(value: Any, where: str) -> None:
    with pytest.raises(NonRetryableError, match=where) as info:
        resolve(value, VALUES)
    assert "known: batch_id, flag, none, tables, year" in str(info.value)


def test_unknown_placeholder_without_values() -> None:
    with pytest.raises(NonRetryableError, match=r"known: none"):
        resolve("{x}", {})


def test_resolve_does_not_mutate_input() -> None:
    value = {"a": ["{year}"]}
    resolve(value, VALUES)
    assert value == {"a": ["{year}"]}
