"""The asset graph's layout (pure): columns by longest path, a cycle in three columns, and
every name escaped."""

from __future__ import annotations

from typing import Any

from dagrelay.dashboard.asset_graph import edges, layout, svg


def asset(name: str, producers: list[str], consumers: list[str]) -> dict[str, Any]:
    return {"asset": name, "producers": producers, "consumers": consumers}


CHAIN = [
    asset("sales", ["ingest.sales/ingest.sales.trigger"], ["profit"]),
    asset("expenses", ["ingest.expenses/ingest.expenses.trigger"], ["profit"]),
    asset("profit_table", ["profit/calc"], ["report"]),
]


def test_a_chain_of_pipelines_and_assets_reads_left_to_right() -> None:
    placed = layout(CHAIN)
    assert placed[("pipeline", "ingest.sales")][0] == 0
    assert placed[("asset", "sales")][0] == 1
    assert placed[("pipeline", "profit")][0] == 2
    assert placed[("asset", "profit_table")][0] == 3
    assert placed[("pipeline", "report")][0] == 4
    assert (("asset", "sales"), ("pipeline", "profit")) in edges(CHAIN)


def test_a_cycle_across_pipelines_is_drawn_by_role() -> None:
    cycle = [asset("x", ["a/t"], ["b"]), asset("y", ["b/t"], ["a"])]
    assert {column for column, _ in layout(cycle).values()} == {0, 1}
    assert layout(cycle)[("asset", "x")] == (1, 0)


def test_an_asset_nobody_uses_still_shows_and_names_are_escaped() -> None:
    drawn = str(svg([asset("<b>x</b>", [], [])], ""))
    assert "&lt;b&gt;x&lt;/b&gt;" in drawn
    assert "<b>" not in drawn
    assert str(svg([], "")) == ""
