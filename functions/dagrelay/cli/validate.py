"""``dagrelay validate [FILES...]``: check pipeline files, or every pipeline in the database."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from dagrelay.cli.app import reports_errors
from dagrelay.errors import DagrelayError, PipelineError

if TYPE_CHECKING:
    from dagrelay.pipelines.spec import PipelineSpec


@reports_errors
def validate(
    files: Annotated[
        list[str] | None,
        typer.Argument(
            help="Pipeline files (.yaml, .py) or module:attribute (default: every pipeline "
            "in the database).",
        ),
    ] = None,
) -> None:
    """Check pipelines: cycles, unknown parents and handlers, params that do not fit their
    handler. Exit code 2 if anything is wrong, with every problem printed."""
    from dagrelay.pipelines.validate import problems as pipeline_problems
    from dagrelay.pipelines.validate import registered_handlers

    handlers = registered_handlers()
    found: list[str] = []
    for source, spec in _specs(files or [], found):
        problems = pipeline_problems(spec, handlers)
        found += problems
        if not problems:
            typer.echo(f"{source}: pipeline {spec.pipeline} is valid ({len(spec.tasks)} tasks)")
    if found:
        raise PipelineError(found)


def _specs(files: Sequence[str], found: list[str]) -> list[tuple[str, PipelineSpec]]:
    """The pipelines of the files (a file that does not load adds its problems to ``found``),
    or with no files every pipeline in the database."""
    from dagrelay.pipelines.export import read_pipeline
    from dagrelay.pipelines.sources import load_specs
    from dagrelay.store import reads
    from dagrelay.store.db import get_engine

    if not files:
        with get_engine().connect() as conn:
            names = reads.pipeline_names(conn)
            if not names:
                raise DagrelayError("no pipelines in the database (and no files given)")
            return [(f"database:{n}", read_pipeline(conn, n)) for n in names]
    specs = []
    for file in files:
        try:
            specs += [(spec.source, spec) for spec in load_specs(file)]
        except PipelineError as exc:
            found += exc.problems
    return specs
