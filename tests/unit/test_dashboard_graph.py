"""The graph's data for the page's script (pure), and the vendored layout library's hash."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from dagrelay.dashboard import graph
from dagrelay.dashboard.assets import SERVED, STATIC
from tests.e2e.dashboard_browser import Rect, segment_enters

ORDERS = [
    ("extract", "validate"),
    ("validate", "audit"),
    ("validate", "cleanup"),
    ("validate", "enrich"),
    ("cleanup", "enrich"),
    ("audit", "report"),
    ("enrich", "report"),
]


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("part_017", "part_*"),
        ("stage3_part_042", "stage3_part_*"),
        ("load_sales", "load_*"),
        ("check.expenses", "check.*"),
        ("extract", None),
        ("42", None),
    ],
)
def test_prefix_group(name: str, group: str | None) -> None:
    assert graph.prefix_group(name) == group


def test_levels_are_longest_paths_and_cycles_are_named() -> None:
    names = {n for e in ORDERS for n in e}
    assert graph.levels(names, ORDERS) == {
        "extract": 0,
        "validate": 1,
        "audit": 2,
        "cleanup": 2,
        "enrich": 3,
        "report": 4,
    }
    with pytest.raises(ValueError, match="cycle among a, b"):
        graph.levels(["a", "b", "c"], [("a", "b"), ("b", "a"), ("c", "a")])
    with pytest.raises(ValueError, match="unknown task"):
        graph.levels(["a"], [("a", "z")])


def test_payload_columns_and_the_initial_grouping() -> None:
    data = graph.payload(["b", "a"], [("a", "b")], {"a": "SUCCESS"}, ["a"], "/t/{task}")
    assert data == {
        "names": ["a", "b"],
        "status": ["SUCCESS", "PENDING"],
        "level": [0, 1],
        "prefix": [None, None],
        "edges": [[0, 1]],
        "causes": [0],
        "mode": "none",
        "task_url": "/t/{task}",
        "items": [None, None],
    }
    parts = [f"part_{i:03d}" for i in range(200)]
    assert graph.payload(parts, [])["mode"] == "prefix"
    unique = [f"t{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(200)]
    assert graph.payload(unique, [])["mode"] == "level"


def test_a_mapped_task_carries_its_group_counts() -> None:
    group = {"total": 30, "succeeded": 12, "failed": 1, "running": 2}
    data = graph.payload(["a", "b"], [("a", "b")], {"b": "PROCESSING"}, groups={"b": group})
    assert data["items"] == [None, {"total": 30, "done": 13, "failed": 1, "running": 2}]


def test_a_naive_layered_layout_draws_the_orders_shape_through_a_box() -> None:
    """Why the layout is ELK's: the old layout (longest-path columns ordered by name, centred,
    edges drawn straight from box to box) sends audit -> report through enrich; the browser
    test checks that ELK's drawing of the same shape crosses no box."""
    names = sorted({n for e in ORDERS for n in e})
    level = graph.levels(names, ORDERS)
    columns: dict[int, list[str]] = {}
    for name in names:
        columns.setdefault(level[name], []).append(name)
    tallest = max(len(c) for c in columns.values())
    w, h, gap_x, gap_y = 184, 50, 72, 22
    boxes = {
        name: Rect(
            name, i * (w + gap_x), (tallest - len(col)) * (h + gap_y) / 2 + k * (h + gap_y), w, h
        )
        for i, col in columns.items()
        for k, name in enumerate(col)
    }
    a, r = boxes["audit"], boxes["report"]
    assert segment_enters(a.x + a.w, a.y + a.h / 2, r.x, r.y + r.h / 2, boxes["enrich"], 1.0)


def test_vendored_files_match_their_recorded_hashes() -> None:
    table = (STATIC / "VENDORED.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", table, flags=re.M)
    assert rows, "VENDORED.md lists no file"
    for name, sha256 in rows:
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == sha256, name
        assert name in SERVED
    assert (STATIC / "ELK-LICENSE.md").is_file()
    assert "0.12.1" in table


def test_the_function_archive_and_the_wheel_ship_the_static_files() -> None:
    from dagrelay.ops.packaging import archive_members  # noqa: PLC0415

    members = archive_members()
    for name in (*SERVED, "VENDORED.md", "ELK-LICENSE.md"):
        assert f"dagrelay/dashboard/static/{name}" in members, name
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"dagrelay.dashboard" = ["static/*.css", "static/*.js", "static/*.md"]' in pyproject


def test_gantt_draws_one_bar_per_attempt_on_one_axis() -> None:
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415

    from dagrelay.dashboard.svg import gantt  # noqa: PLC0415

    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    attempts = [
        {
            "task": "a<b>",
            "run": 1,
            "attempt": 1,
            "outcome": "ERROR",
            "started_at": t0,
            "finished_at": t0 + timedelta(seconds=2),
        },
        {
            "task": "a<b>",
            "run": 1,
            "attempt": 2,
            "outcome": None,
            "started_at": t0 + timedelta(seconds=5),
            "finished_at": None,
        },
        {
            "task": "c",
            "run": 1,
            "attempt": 1,
            "outcome": "SUCCESS",
            "started_at": t0 + timedelta(seconds=1),
            "finished_at": t0 + timedelta(seconds=3),
        },
    ]
    svg = str(gantt(attempts, now=t0 + timedelta(seconds=10)))
    bars = re.findall(
        r'<rect class="bar status-(\w+)" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)"', svg
    )
    assert [b[0] for b in bars] == ["ERROR", "PROCESSING", "SUCCESS"]
    assert bars[0][2] == bars[1][2] != bars[2][2]  # retries share their task's row
    assert float(bars[0][1]) == 220  # the first attempt starts the axis
    assert float(bars[1][1]) + float(bars[1][3]) == pytest.approx(220 + 900)  # runs until now
    assert "a<b>" not in svg
    assert "a&lt;b&gt;" in svg
