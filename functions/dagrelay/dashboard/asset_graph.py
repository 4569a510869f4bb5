"""The asset graph across pipelines, drawn on the server as inline SVG (pure: no I/O).

Nodes are pipelines and assets; a pipeline points to each asset one of its tasks updates, an
asset to each pipeline waiting for it (``on_assets``). Nodes sit in columns by their longest
path from a node nothing points to (``graph.levels``); a cycle across pipelines (A updates x,
B waits for x and updates y, A waits for y) is drawn by role instead: producers,
assets, consumers. Every value from the database is escaped by ``Markup.format``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

from dagrelay.dashboard.graph import levels
from dagrelay.dashboard.parts import url

COL_W, NODE_W, NODE_H, ROW_H, PAD = 280, 220, 26, 40, 10

Node = tuple[str, str]  # ("pipeline" | "asset", name)


def edges(assets: Sequence[Mapping[str, Any]]) -> list[tuple[Node, Node]]:
    """(from, to): producer pipeline -> asset -> consumer pipeline."""
    found: set[tuple[Node, Node]] = set()
    for row in assets:
        asset: Node = ("asset", row["asset"])
        for producer in row["producers"] or ():
            found.add((("pipeline", producer.split("/", 1)[0]), asset))
        for consumer in row["consumers"] or ():
            found.add((asset, ("pipeline", consumer)))
    return sorted(found)


def layout(assets: Sequence[Mapping[str, Any]]) -> dict[Node, tuple[int, int]]:
    """{node: (column, row)}."""
    links = edges(assets)
    nodes = sorted({n for link in links for n in link} | {("asset", a["asset"]) for a in assets})
    keys = {n: f"{n[0]}:{n[1]}" for n in nodes}
    try:
        level = levels(keys.values(), [(keys[a], keys[b]) for a, b in links])
        column = {n: level[keys[n]] for n in nodes}
    except ValueError:  # a cycle across pipelines
        producers = {a for a, _ in links if a[0] == "pipeline"}
        column = {n: 1 if n[0] == "asset" else (0 if n in producers else 2) for n in nodes}
    rows: dict[int, int] = {}
    placed: dict[Node, tuple[int, int]] = {}
    for node in sorted(nodes, key=lambda n: (column[n], n)):
        placed[node] = (column[node], rows.get(column[node], 0))
        rows[column[node]] = rows.get(column[node], 0) + 1
    return placed


def svg(assets: Sequence[Mapping[str, Any]], base: str) -> Markup:
    """The graph as an <svg> element (empty Markup when there is no asset)."""
    placed = layout(assets)
    if not placed:
        return Markup("")
    width = (max(c for c, _ in placed.values()) + 1) * COL_W
    height = (max(r for _, r in placed.values()) + 1) * ROW_H + PAD

    def anchor(node: Node, right: bool) -> tuple[int, int]:
        column, row = placed[node]
        return column * COL_W + (NODE_W if right else 0), row * ROW_H + PAD + NODE_H // 2

    lines = [
        Markup('<line class="edge" x1="{}" y1="{}" x2="{}" y2="{}"/>').format(
            *anchor(a, True), *anchor(b, False)
        )
        for a, b in edges(assets)
    ]
    boxes = [_box(node, *position, base) for node, position in placed.items()]
    return Markup(
        '<svg class="asset-graph" role="img" aria-label="asset graph" width="{w}" '
        'height="{h}" viewBox="0 0 {w} {h}">{lines}{boxes}</svg>'
    ).format(w=width, h=height, lines=Markup("").join(lines), boxes=Markup("").join(boxes))


def _box(node: Node, column: int, row: int, base: str) -> Markup:
    kind, name = node
    shown = name if len(name) <= 30 else name[:29] + "…"
    box = Markup(
        '<g class="{kind}"><rect x="{x}" y="{y}" width="{w}" height="{h}" rx="{r}"/>'
        '<text x="{tx}" y="{ty}"><title>{name}</title>{shown}</text></g>'
    ).format(
        kind=kind,
        x=column * COL_W,
        y=row * ROW_H + PAD,
        w=NODE_W,
        h=NODE_H,
        r=12 if kind == "asset" else 3,
        tx=column * COL_W + 8,
        ty=row * ROW_H + PAD + 17,
        name=name,
        shown=shown,
    )
    if kind == "pipeline":
        return Markup('<a href="{}">{}</a>').format(url(base, "pipelines", name), box)
    return box
