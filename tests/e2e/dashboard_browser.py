"""Helpers of the dashboard's browser tests: open a page and wait for its graph, keep a
screenshot, read the drawn graph's geometry, and check it (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from tests.conftest import ARTIFACTS

if TYPE_CHECKING:
    from playwright.sync_api import Page

LAYOUT_TIMEOUT_MS = 60_000
GEOMETRY_JS = """() => {
  const svg = document.querySelector('#graph svg');
  const boxes = [...svg.querySelectorAll('g.node')].map(g => {
    const r = g.querySelector('rect.box');
    return {id: g.dataset.task || g.dataset.group, x: +r.getAttribute('x'),
            y: +r.getAttribute('y'), w: +r.getAttribute('width'), h: +r.getAttribute('height')};
  });
  const edges = [...svg.querySelectorAll('path.edge')].map(p => ({
    source: p.dataset.source, target: p.dataset.target,
    points: p.getAttribute('d').split(/[ML]/).map(s => s.trim()).filter(Boolean)
      .map(s => s.split(',').map(Number))}));
  return {boxes, edges, width: +svg.getAttribute('width'), height: +svg.getAttribute('height')};
}"""


@dataclass(frozen=True)
class Rect:
    id: str
    x: float
    y: float
    w: float
    h: float


def open_page(page: Page, url: str, graph: bool = False) -> None:
    response = page.goto(url)
    assert response is not None
    assert response.status == 200, (url, response.status)
    if graph:
        page.wait_for_selector('#graph[data-layout="done"]', timeout=LAYOUT_TIMEOUT_MS)


def shot(page: Page, name: str) -> None:
    """Keep a full-page screenshot as test-artifacts/dashboard-<name>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def geometry(page: Page) -> dict[str, Any]:
    drawn: dict[str, Any] = page.evaluate(GEOMETRY_JS)
    return drawn


def segment_enters(x1: float, y1: float, x2: float, y2: float, box: Rect, inset: float) -> bool:
    """Whether the segment passes through the box's interior (shrunk by ``inset``), by
    Liang-Barsky clipping."""
    left, right = box.x + inset, box.x + box.w - inset
    top, bottom = box.y + inset, box.y + box.h - inset
    dx, dy = x2 - x1, y2 - y1
    low, high = 0.0, 1.0
    for p, q in ((-dx, x1 - left), (dx, right - x1), (-dy, y1 - top), (dy, bottom - y1)):
        if p == 0:
            if q < 0:
                return False
            continue
        t = q / p
        if p < 0:
            low = max(low, t)
        else:
            high = min(high, t)
        if low > high:
            return False
    return True


def crossings(drawn: dict[str, Any], inset: float = 1.0) -> list[tuple[str, str, str]]:
    """(edge source, edge target, box) for every edge segment that passes through a box."""
    boxes = [Rect(**b) for b in drawn["boxes"]]
    found = []
    for edge in drawn["edges"]:
        points = edge["points"]
        for (x1, y1), (x2, y2) in pairwise(points):
            found += [
                (edge["source"], edge["target"], box.id)
                for box in boxes
                if segment_enters(x1, y1, x2, y2, box, inset)
            ]
    return sorted(set(found))
