"""``dagrelay init DIR``: write a working project for a team (dagrelay.scaffold)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from dagrelay.cli.app import reports_errors


@reports_errors
def init(
    directory: Annotated[Path, typer.Argument(help="Where to write the project (new or empty).")],
    terraform_module: Annotated[
        str | None,
        typer.Option(
            help="The `source` of dagrelay's Terraform module: a local checkout's terraform/ "
            "directory, or a git URL (default: the git tag of this dagrelay version)."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Write into a non-empty directory.")
    ] = False,
) -> None:
    """Write a small working project: a YAML and a Python pipeline, a handler with typed
    params, SQL, requirements, a test of the pipelines, a Terraform root using dagrelay's
    module, and a README saying how to run, test and deploy it."""
    from dagrelay import scaffold

    source = terraform_module
    if source is not None and Path(source).is_dir():
        source = os.path.relpath(Path(source).resolve(), (directory / "terraform").resolve())
    written = scaffold.write_project(directory, terraform_source=source, force=force)
    typer.echo(f"wrote project {written.project} in {directory}:")
    for name in written.files:
        typer.echo(f"  {name}")
    typer.echo(f"next: cd {directory} && see README.md (pytest, pipeline apply, build-function)")
