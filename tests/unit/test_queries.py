"""The named-query file format (``-- name: x`` blocks)."""

from __future__ import annotations

import pytest

from dagrelay.resources import schema_dir
from dagrelay.store.queries import parse_queries


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("", {}, id="empty"),
        pytest.param("-- just a comment\n", {}, id="no header"),
        pytest.param("-- name: one\nSELECT 1;\n", {"one": "SELECT 1"}, id="one query"),
        pytest.param(
            "-- header comment\n-- name: a\nSELECT 1;\n\n-- name: b\n-- what b does\nSELECT 2;\n",
            {"a": "SELECT 1", "b": "SELECT 2"},
            id="two queries, comment lines and preamble dropped",
        ),
        pytest.param(
            "-- name: c\n-- uses :word in prose\nSELECT :x -- inline stays\n",
            {"c": "SELECT :x -- inline stays"},
            id="a bind-like word in a comment line cannot become a parameter",
        ),
        pytest.param(
            "-- name: multi\nSELECT 1\nFROM t\nWHERE x = ';';\n",
            {"multi": "SELECT 1\nFROM t\nWHERE x = ';'"},
            id="multi-line, only the last semicolon stripped",
        ),
        pytest.param(
            "-- name: a   \nSELECT 1\n", {"a": "SELECT 1"}, id="trailing spaces after name"
        ),
        pytest.param("SELECT 1; -- name: inline\n", {}, id="header must start a line"),
    ],
)
def test_parse_queries(source: str, expected: dict[str, str]) -> None:
    assert parse_queries(source) == expected


def test_duplicate_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="'a' is defined twice"):
        parse_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")


def test_checked_in_queries_parse_and_cover_the_engine() -> None:
    queries = parse_queries((schema_dir() / "queries.sql").read_text(encoding="utf-8"))
    for name in (
        "start_batch",
        "claim_task",
        "finish_attempt",
        "advance_children",
        "finish_batch",
        "mark_published",
        "record_rejected_message",
        "lock_unpublished_outbox",
    ):
        assert queries.get(name), name
    assert all(not sql.endswith(";") for sql in queries.values())
