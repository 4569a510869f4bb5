"""A layered drawing of a DAG, computed on the server (pure: no I/O, no SVG).

Layers by longest path: a task with no parents is in layer 0, any other task one layer right of
its deepest parent. Within a layer tasks are ordered by name, and each layer is centred
vertically against the tallest one. Edges are cubic curves from a parent's right side to a
child's left side."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

NODE_W = 184
NODE_H = 50
GAP_X = 72
GAP_Y = 22
PAD = 16


@dataclass(frozen=True)
class Box:
    name: str
    layer: int
    order: int
    x: float
    y: float
    w: float = NODE_W
    h: float = NODE_H


@dataclass(frozen=True)
class Edge:
    parent: str
    child: str
    path: str


@dataclass(frozen=True)
class Layout:
    boxes: dict[str, Box]
    edges: list[Edge]
    width: float
    height: float


def layers(names: Iterable[str], edges: Iterable[tuple[str, str]]) -> dict[str, int]:
    """{task: layer} by longest path from a root; ``edges`` are (parent, child) pairs.
    Raises ValueError on an edge to an unknown task or a cycle."""
    nodes = set(names)
    parents: dict[str, set[str]] = {n: set() for n in nodes}
    for parent, child in edges:
        if parent not in nodes or child not in nodes:
            raise ValueError(f"edge {parent} -> {child} names an unknown task")
        parents[child].add(parent)
    layer: dict[str, int] = {}
    remaining = dict(parents)
    while remaining:
        ready = sorted(n for n, ps in remaining.items() if ps <= layer.keys())
        if not ready:
            raise ValueError(f"cycle among {', '.join(sorted(remaining))}")
        for node in ready:
            layer[node] = 1 + max((layer[p] for p in remaining.pop(node)), default=-1)
    return layer


def layout(names: Iterable[str], edges: Iterable[tuple[str, str]]) -> Layout:
    """Positions for every task and a path for every edge."""
    edge_list = sorted(set(edges))
    layer_of = layers(names, edge_list)
    columns: dict[int, list[str]] = {}
    for name in sorted(layer_of):
        columns.setdefault(layer_of[name], []).append(name)
    tallest = max((len(c) for c in columns.values()), default=0)
    boxes: dict[str, Box] = {}
    for index in sorted(columns):
        column = columns[index]
        offset = (tallest - len(column)) * (NODE_H + GAP_Y) / 2
        for order, name in enumerate(column):
            x = PAD + index * (NODE_W + GAP_X)
            y = PAD + offset + order * (NODE_H + GAP_Y)
            boxes[name] = Box(name, index, order, x, y)
    drawn = [Edge(p, c, _curve(boxes[p], boxes[c])) for p, c in edge_list]
    width = 2 * PAD + len(columns) * NODE_W + max(len(columns) - 1, 0) * GAP_X
    height = 2 * PAD + tallest * NODE_H + max(tallest - 1, 0) * GAP_Y
    return Layout(boxes, drawn, width, height)


def _curve(parent: Box, child: Box) -> str:
    x1, y1 = parent.x + parent.w, parent.y + parent.h / 2
    x2, y2 = child.x, child.y + child.h / 2
    bend = max((x2 - x1) / 2, 24)
    return (
        f"M{_n(x1)},{_n(y1)} C{_n(x1 + bend)},{_n(y1)} {_n(x2 - bend)},{_n(y2)} {_n(x2)},{_n(y2)}"
    )


def _n(value: float) -> str:
    """Coordinates without float noise: 40.0 -> '40', 12.5 -> '12.5'."""
    return f"{value:.1f}".rstrip("0").rstrip(".")
