"""The dashboard's DAG layout: longest-path layers, name order within a layer, geometry."""

from __future__ import annotations

import pytest
from markupsafe import Markup

from dagrelay.dashboard import layout as lay
from dagrelay.dashboard.svg import graph


@pytest.mark.parametrize(
    ("names", "edges", "expected"),
    [
        pytest.param([], [], {}, id="empty"),
        pytest.param(["a"], [], {"a": 0}, id="single"),
        pytest.param(["b", "a"], [], {"a": 0, "b": 0}, id="independent roots"),
        pytest.param(
            ["a", "b", "c"], [("a", "b"), ("b", "c")], {"a": 0, "b": 1, "c": 2}, id="chain"
        ),
        pytest.param(
            ["a", "b", "c", "d"],
            [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")],
            {"a": 0, "b": 1, "c": 1, "d": 2},
            id="diamond",
        ),
        pytest.param(
            ["a", "b", "c", "d"],
            [("a", "b"), ("b", "c"), ("a", "d"), ("c", "d")],
            {"a": 0, "b": 1, "c": 2, "d": 3},
            id="longest path wins over the shortcut",
        ),
        pytest.param(
            ["x", "y", "z"], [("x", "z"), ("y", "z")], {"x": 0, "y": 0, "z": 1}, id="fan-in"
        ),
    ],
)
def test_layers(names: list[str], edges: list[tuple[str, str]], expected: dict[str, int]) -> None:
    assert lay.layers(names, edges) == expected


def test_order_within_a_layer_is_by_name_and_geometry_follows() -> None:
    drawn = lay.layout(
        ["root", "zeta", "alpha", "mid"], [("root", n) for n in ("zeta", "alpha", "mid")]
    )
    assert [(b.name, b.layer, b.order) for b in drawn.boxes.values()] == [
        ("root", 0, 0),
        ("alpha", 1, 0),
        ("mid", 1, 1),
        ("zeta", 1, 2),
    ]
    boxes = drawn.boxes
    assert boxes["alpha"].x == boxes["mid"].x == boxes["zeta"].x > boxes["root"].x
    assert boxes["alpha"].y < boxes["mid"].y < boxes["zeta"].y
    # a shorter layer is centred against the tallest one
    assert boxes["root"].y == boxes["mid"].y
    assert drawn.width == 2 * lay.PAD + 2 * lay.NODE_W + lay.GAP_X
    assert drawn.height == 2 * lay.PAD + 3 * lay.NODE_H + 2 * lay.GAP_Y


def test_edges_run_from_parent_right_side_to_child_left_side() -> None:
    drawn = lay.layout(["a", "b"], [("a", "b"), ("a", "b")])
    assert len(drawn.edges) == 1, "a repeated edge is drawn once"
    edge = drawn.edges[0]
    a, b = drawn.boxes["a"], drawn.boxes["b"]
    start, end = edge.path.split(" ")[0], edge.path.split(" ")[-1]
    assert start == f"M{a.x + a.w:g},{a.y + a.h / 2:g}"
    assert end == f"{b.x:g},{b.y + b.h / 2:g}"


def test_layout_is_deterministic_whatever_the_input_order() -> None:
    edges = [("a", "c"), ("b", "c"), ("c", "d")]
    first = lay.layout(["d", "c", "b", "a"], edges)
    second = lay.layout(["a", "b", "c", "d"], list(reversed(edges)))
    assert first == second


def test_unknown_task_in_an_edge_is_an_error() -> None:
    with pytest.raises(ValueError, match="a -> ghost names an unknown task"):
        lay.layers(["a"], [("a", "ghost")])


def test_cycle_is_an_error() -> None:
    with pytest.raises(ValueError, match="cycle among a, b"):
        lay.layers(["a", "b", "root"], [("root", "a"), ("a", "b"), ("b", "a")])


def test_svg_nodes_carry_status_classes_and_data_attributes() -> None:
    svg = graph(
        ["bad", "child", "ok"],
        [("bad", "child")],
        {"bad": "ERROR", "child": "UPSTREAM_FAILED", "ok": None},
        root_causes=["bad"],
    )
    assert isinstance(svg, Markup)
    assert 'class="node status-ERROR root-cause" data-task="bad" data-status="ERROR"' in svg
    assert 'data-task="child" data-status="UPSTREAM_FAILED"' in svg
    assert 'data-task="ok" data-status="PENDING"' in svg
    assert 'data-parent="bad" data-child="child"' in svg
    assert svg.count('class="halo"') == 1


def test_svg_without_statuses_is_uncoloured() -> None:
    svg = graph(["a", "b"], [("a", "b")])
    assert svg.count("status-none") == 2
    assert "root-cause" not in svg


def test_svg_escapes_names() -> None:
    svg = graph(['a"<b>'], [], {'a"<b>': "SUCCESS"})
    assert "<b>" not in svg
    assert "a&#34;&lt;b&gt;" in svg
