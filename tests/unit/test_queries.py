"""The named-query file format (``-- name: x`` blocks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagrelay.store import queries as queries_mod
from dagrelay.store.queries import all_queries, parse_queries, query_files


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
    queries = all_queries()
    for name in (
        "start_batch",
        "claim_task",
        "finish_attempt",
        "advance_children",
        "finish_batch",
        "mark_published",
        "record_rejected_message",
        "claim_unpublished_outbox",
    ):
        assert queries.get(name), name
    assert all(not sql.endswith(";") for sql in queries.values())


def test_a_name_is_defined_once_across_files() -> None:
    names = [n for path in query_files() for n in parse_queries(path.read_text(encoding="utf-8"))]
    assert len(names) == len(set(names)) == len(all_queries())
    assert {p.parent.name for p in query_files()} == {"sql"}


def test_a_name_in_two_files_is_an_error_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "reads.sql").write_text("-- name: a\nSELECT 1;\n")
    (tmp_path / "sql" / "tasks.sql").write_text("-- name: a\nSELECT 2;\n")
    monkeypatch.setattr(queries_mod, "schema_dir", lambda: tmp_path)
    all_queries.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"'a' is defined twice \(reads.sql, tasks.sql\)"):
            all_queries()
    finally:
        all_queries.cache_clear()
