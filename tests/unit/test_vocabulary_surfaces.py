"""Where the vocabulary of ``dagrelay.states`` is shown or published, it is the whole vocabulary
and nothing else: the OpenAPI document's enums, the dashboard's legend, its script and its
stylesheet, the CLI's colours, and the actions the SQL writes into messages. (The database's
enums are compared with the same enums in tests/integration/test_migrations.py.)"""

from __future__ import annotations

import json
import re
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest

from dagrelay.cli.render import STATUS_STYLES
from dagrelay.dashboard.parts import PENDING
from dagrelay.dashboard.render import LEGEND, legend
from dagrelay.states import Action, BatchStatus, TaskStatus, TriggerRule

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "functions" / "dagrelay" / "dashboard" / "static"
OPENAPI = json.loads((REPO / "schema" / "openapi.json").read_text(encoding="utf-8"))
TASK = {s.value for s in TaskStatus}
BATCH = {s.value for s in BatchStatus}


def values(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]


@pytest.mark.parametrize("enum", [TaskStatus, BatchStatus, TriggerRule])
def test_openapi_enum_is_the_python_enum(enum: type[StrEnum]) -> None:
    assert OPENAPI["components"]["schemas"][enum.__name__]["enum"] == values(enum)


def enums(node: Any) -> list[list[str]]:
    if isinstance(node, dict):
        found = [node["enum"]] if "enum" in node else []
        return found + [e for v in node.values() for e in enums(v)]
    if isinstance(node, list):
        return [e for v in node for e in enums(v)]
    return []


def test_no_other_openapi_enum_spells_part_of_the_vocabulary() -> None:
    """A status list written out elsewhere in the document would drift: it must be a $ref."""
    ours = [values(e) for e in (TaskStatus, BatchStatus, TriggerRule)]
    words = {w for e in ours for w in e}
    stray = [e for e in enums(OPENAPI) if set(e) & words and e not in ours]
    assert stray == []


def test_dashboard_legend_is_every_task_status_and_pending() -> None:
    assert Counter(LEGEND) == Counter([*TASK, PENDING])
    shown = set(re.findall(r'class="pill status-(\w+)"', str(legend())))
    assert shown == TASK | {PENDING}


def test_dashboard_script_ranks_every_task_status() -> None:
    script = (STATIC / "dashboard.js").read_text(encoding="utf-8")
    match = re.search(r"var SEVERITY = \[([^\]]*)\]", script)
    assert match is not None
    ranked = re.findall(r'"(\w+)"', match.group(1))
    assert Counter(ranked) == Counter([*TASK, PENDING, "none"])  # none: a group with no task


STYLES = (STATIC / "style.css").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("pattern", "needed"),
    [
        (r"\.pill\.status-(\w+)", TASK | BATCH | {PENDING}),  # pills: tasks and batches
        (r"svg\.dag \.status-(\w+) \.box", TASK | {PENDING}),  # the graph's task boxes
        (r"\.cell\.status-(\w+)", TASK | BATCH | {PENDING}),  # the grid: cells and batch heads
        (r"\.status-(\w+)\.bar", TASK | {PENDING}),  # the Gantt's attempt bars
    ],
)
def test_every_status_has_its_style(pattern: str, needed: set[str]) -> None:
    assert needed - set(re.findall(pattern, STYLES)) == set()


def test_the_stylesheet_names_no_status_that_does_not_exist() -> None:
    named = set(re.findall(r"\.(?:status|outcome)-(\w+)", STYLES))
    assert named - (TASK | BATCH | {PENDING, "none"}) == set()


def test_cli_colours_every_task_and_batch_status() -> None:
    assert set(STATUS_STYLES) == TASK | BATCH


def test_the_sql_writes_only_actions_of_the_vocabulary() -> None:
    """The run_task and poll_task messages the SQL writes name an action of ``Action``."""
    sql = [*(REPO / "schema" / "sql").glob("*.sql"), *(REPO / "schema" / "functions").glob("*")]
    written = {
        action
        for path in sql
        for action in re.findall(r"'action',\s*'(\w+)'", path.read_text(encoding="utf-8"))
    }
    assert written
    assert written <= set(values(Action))
