"""``dagrelay pipeline export PIPELINE [-o FILE]``: a pipeline's rows as a pipeline file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dagrelay.cli.app import reports_errors


@reports_errors
def pipeline_export(
    pipeline: Annotated[str, typer.Argument(help="The pipeline to export.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Write a pipeline's rows as a pipeline file: `pipeline apply` of it changes nothing."""
    from dagrelay.pipelines.export import export_yaml, read_pipeline
    from dagrelay.store.db import get_engine

    with get_engine().connect() as conn:
        spec = read_pipeline(conn, pipeline)
    text = export_yaml(spec)
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {output} (pipeline {pipeline}, {len(spec.tasks)} tasks)")
