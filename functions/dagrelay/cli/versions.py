"""``dagrelay pipeline history NAME`` (its versions and the batches that ran each) and
``dagrelay pipeline diff NAME A B`` (what changed from version A to version B)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dagrelay.cli.app import fail, reports_errors

if TYPE_CHECKING:
    from dagrelay.engine import versions

MAX_BATCHES_SHOWN = 10


@reports_errors
def pipeline_history(
    pipeline: Annotated[str, typer.Argument(help="The pipeline.")],
) -> None:
    """Every version of the pipeline, when it was first used, and the batches that ran it."""
    from rich.console import Console
    from rich.table import Table

    from dagrelay.cli.render import time_text
    from dagrelay.store import versions as store
    from dagrelay.store.db import get_engine

    with get_engine().connect() as conn:
        rows = store.history(conn, pipeline)
    if not rows:
        fail([f"pipeline {pipeline!r} has no versions (no batch has started)"], 1)
    table = Table(title=f"pipeline {pipeline}: versions", title_justify="left")
    for column in ("version", "first used", "tasks", "hash", "batches"):
        table.add_column(column, overflow="fold")
    for row in rows:
        batches: list[str] = list(row["batches"])
        shown = ", ".join(batches[:MAX_BATCHES_SHOWN])
        if len(batches) > MAX_BATCHES_SHOWN:
            shown += f", ... ({len(batches)} in all)"
        table.add_row(
            str(row["version"]),
            time_text(row["created_at"], "%Y-%m-%d %H:%M:%S"),
            str(row["tasks"]),
            row["content_hash"][:12],
            shown or "-",
        )
    Console().print(table)


@reports_errors
def pipeline_diff(
    pipeline: Annotated[str, typer.Argument(help="The pipeline.")],
    old: Annotated[int, typer.Argument(help="The version to compare from.")],
    new: Annotated[int, typer.Argument(help="The version to compare to.")],
) -> None:
    """What changed from version OLD to version NEW: tasks added, removed and changed (field
    by field), edges added and removed."""
    from dagrelay.engine import moves, versions
    from dagrelay.store import versions as store
    from dagrelay.store.db import get_engine

    with get_engine().connect() as conn:
        found = [store.header(conn, pipeline=pipeline, version=n) for n in (old, new)]
        missing = [str(n) for n, h in zip((old, new), found, strict=True) if h is None]
        if missing:
            fail([f"pipeline {pipeline!r} has no version {', '.join(missing)}"], 1)
        a, b = (moves.load_definition(conn, h["version_id"]) for h in found if h is not None)
    for line in diff_lines(versions.diff(a, b)) or ["no differences"]:
        typer.echo(line)


def diff_lines(changes: versions.VersionDiff) -> list[str]:
    """The diff as text, one change a line: ``+ task``, ``- task``, ``~ task: field a -> b``,
    ``+ edge parent -> child``, ``- edge parent -> child``."""
    lines = [f"+ task {name}" for name in changes.added]
    lines += [f"- task {name}" for name in changes.removed]
    for name, fields in changes.changed.items():
        lines += [f"~ task {name}: {f} {_show(a)} -> {_show(b)}" for f, (a, b) in fields.items()]
    lines += [f"+ edge {p} -> {c}" for p, c in changes.edges_added]
    lines += [f"- edge {p} -> {c}" for p, c in changes.edges_removed]
    return lines


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
