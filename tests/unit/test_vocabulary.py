"""One vocabulary: statuses, trigger rules and message actions are written once, in
``dagrelay.states``; the rest of the package uses the enums. A string literal equal to one of
their values anywhere else in ``functions/dagrelay`` fails here (docstrings aside; the SQL is
the database's side and is checked against the enums by tests/integration/test_migrations.py)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

import pytest

from dagrelay.states import Action, BatchStatus, FileStatus, TaskStatus, TriggerRule

PACKAGE = Path(__file__).resolve().parents[2] / "functions" / "dagrelay"
VOCABULARIES: tuple[type[StrEnum], ...] = (
    TaskStatus,
    BatchStatus,
    FileStatus,
    TriggerRule,
    Action,
)
WORDS = frozenset(member.value for enum in VOCABULARIES for member in enum)

# (module, literal): why the literal is not the vocabulary's word, or cannot be the enum.
_FORM_VERB = (
    "a verb of the dashboard's operate forms (trigger, rerun, rerun-failed, cancel, resume), "
    "which is not the message action it publishes"
)
_CLOUD_RUN = "Cloud Run's own execution states, which the local stand-in of its API speaks"
ALLOWED: dict[tuple[str, str], str] = {
    ("cli/schedule.py", "resume"): "the CLI verb `schedule resume` (unpause), not a message",
    ("dashboard/actions.py", "rerun"): _FORM_VERB,
    ("dashboard/actions.py", "resume"): _FORM_VERB,
    ("dashboard/pages.py", "rerun"): _FORM_VERB,
    ("dashboard/render.py", "resume"): _FORM_VERB,
    ("local/cloudrun.py", "RUNNING"): _CLOUD_RUN,
    ("local/cloudrun.py", "FAILED"): _CLOUD_RUN,
    ("local/cloudrun.py", "CANCELLED"): _CLOUD_RUN,
}


def literals(tree: ast.AST) -> Iterator[ast.Constant]:
    """The string constants of a module that are neither docstrings nor the name of a named
    query (``query("cancel_batch")`` names SQL in schema/sql, which shares some words)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            skipped.add(id(first.value))  # a docstring (or a bare string: it does nothing)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "query"
        ):
            skipped.update(id(arg) for arg in node.args)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in skipped
        ):
            yield node


def offences(source: str, module: str) -> list[str]:
    return [
        f"{module}:{node.lineno}: {node.value!r}"
        for node in literals(ast.parse(source))
        if node.value in WORDS and (module, node.value) not in ALLOWED
    ]


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        if module != "states.py":
            yield module, path


def test_no_module_but_states_spells_the_vocabulary() -> None:
    found = [
        offence
        for module, path in modules()
        for offence in offences(path.read_text(encoding="utf-8"), module)
    ]
    assert found == []


def test_every_allowed_literal_is_still_there() -> None:
    sources = {module: path.read_text(encoding="utf-8") for module, path in modules()}
    present = {
        (module, node.value)
        for module, source in sources.items()
        for node in literals(ast.parse(source))
    }
    assert [key for key in ALLOWED if key not in present] == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('if row["status"] == "QUEUED":\n    pass\n', ["m.py:1: 'QUEUED'"]),
        ('RULE = "all_done"\n', ["m.py:1: 'all_done'"]),
        ('log.info("x", extra={"action": "sweep"})\n', ["m.py:1: 'sweep'"]),
        ('def f():\n    """SUCCESS"""\n    return TaskStatus.SUCCESS\n', []),
        ('conn.execute(query("cancel_batch"))\n', []),
        ('style = "bold red"  # ERROR\n', []),
    ],
)
def test_the_check_itself(source: str, expected: list[str]) -> None:
    assert offences(source, "m.py") == expected
