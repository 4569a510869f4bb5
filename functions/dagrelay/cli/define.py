"""Defining things: ``db upgrade``, ``build-function``, ``pipeline validate|apply``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dagrelay.cli.app import app, db_app, fail, pipeline_app, reports_errors

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from dagrelay.ops.packaging import Plan
    from dagrelay.pipelines.apply import ApplyResult
    from dagrelay.pipelines.spec import PipelineSpec

# -- db ------------------------------------------------------------------------------------------


@db_app.command("upgrade")
@reports_errors
def db_upgrade(
    revision: Annotated[str, typer.Option(help="Alembic revision to upgrade to.")] = "head",
) -> None:
    """Run the migrations (alembic upgrade) on the configured database."""
    from dagrelay.store import migrate
    from dagrelay.store.db import get_engine

    engine = get_engine()
    migrate.upgrade(engine, revision)
    typer.echo(f"database at revision {migrate.current(engine) or 'base'}")


@app.command("build-function")
@reports_errors
def build_function(
    out: Annotated[Path, typer.Option(help="Where to write the zip.")] = Path(
        "dist/function-source.zip"
    ),
    project: Annotated[
        Path | None,
        typer.Option(
            help="A team's project (handlers/, pipelines/, sql/, requirements.txt) to pack "
            "with dagrelay; see `dagrelay init`."
        ),
    ] = None,
    list_only: Annotated[
        bool,
        typer.Option(
            "--list",
            help="Print what would go in (and what of the project is left out, and why); "
            "write nothing.",
        ),
    ] = False,
) -> None:
    """Build the Cloud Function source archive (main.py, the package, named SQL, message
    schemas, pinned requirements.txt; with --project the team's handlers, pipelines, SQL and
    requirements) for Terraform or `gcloud functions deploy`. Reproducible byte for byte.
    Hidden and credential-looking files are left out; a link out of the project, a module
    name Python cannot import, an archive over Cloud Functions' size limit or a requirement
    the build cannot install stop it."""
    from dagrelay.ops import packaging

    plan = packaging.plan_archive(project)
    if list_only:
        for line in _plan_lines(plan):
            typer.echo(line)
    if plan.refused:
        fail(plan.refused, 2)
    if list_only:
        return
    try:
        path = packaging.write_archive(out, plan)
    except packaging.ArchiveRefused as exc:
        fail(exc.problems, 2)
    for name, why in plan.left_out.items():
        typer.echo(f"left out {name}: {why}")
    typer.echo(f"{path} ({path.stat().st_size} bytes)")


def _plan_lines(plan: Plan) -> list[str]:
    from dagrelay.ops import packaging

    width = max(len(m.name) for m in plan.members)
    lines = [f"in   {m.name:<{width}}  {m.origin:<14}  {m.size:>10}" for m in plan.members]
    lines += [f"out  {name:<{width}}  {why}" for name, why in plan.left_out.items()]
    limit = packaging.DOCUMENTED_LIMITS.uncompressed
    lines.append(
        f"{len(plan.members)} files, {plan.size} bytes uncompressed (limit {limit}); "
        f"{len(plan.left_out)} left out, {len(plan.refused)} refused"
    )
    return lines


# -- pipeline ------------------------------------------------------------------------------------

PipelineFile = Annotated[
    str,
    typer.Argument(
        help="A pipeline: a YAML file, a Python file (every Pipeline it defines) or "
        "package.module:attribute."
    ),
]


@pipeline_app.command("validate")
@reports_errors
def pipeline_validate(file: PipelineFile) -> None:
    """Check a pipeline (schema, graph, handlers, params) without touching the database."""
    for spec in _load_valid(file):
        typer.echo(f"{spec.source}: pipeline {spec.pipeline} is valid ({len(spec.tasks)} tasks)")


@pipeline_app.command("apply")
@reports_errors
def pipeline_apply(
    file: PipelineFile,
    prune: Annotated[
        bool, typer.Option("--prune", help="Delete this pipeline's tasks the file does not list.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change, then roll back.")
    ] = False,
) -> None:
    """Validate a pipeline (YAML, Python), then write it into tasks and task_dependencies."""
    from dagrelay.pipelines.apply import apply as apply_pipeline

    specs = _load_valid(file)
    with _transaction(rollback=dry_run) as conn:
        results = [apply_pipeline(conn, spec, prune=prune) for spec in specs]
    prefix = "dry run, nothing written: " if dry_run else ""
    for spec, result in zip(specs, results, strict=True):
        typer.echo(f"{prefix}pipeline {spec.pipeline}: {result}")
        for label, names in _apply_details(result):
            typer.echo(f"  {label}: {', '.join(names)}")


def _load_valid(file: str) -> list[PipelineSpec]:
    from dagrelay.pipelines.sources import load_specs
    from dagrelay.pipelines.validate import registered_handlers, validate

    specs = load_specs(file)
    handlers = registered_handlers()
    for spec in specs:
        validate(spec, handlers)
    return specs


@contextmanager
def _transaction(*, rollback: bool) -> Iterator[Connection]:
    from dagrelay.store.db import get_engine

    with get_engine().connect() as conn, conn.begin() as tx:
        yield conn
        if rollback:
            tx.rollback()


def _apply_details(result: ApplyResult) -> list[tuple[str, list[str]]]:
    details = [
        ("created", list(result.created)),
        ("updated", list(result.updated)),
        ("edges added", [f"{p} -> {c}" for p, c in result.edges_added]),
        ("edges removed", [f"{p} -> {c}" for p, c in result.edges_removed]),
        ("pruned", list(result.pruned)),
        (
            "not in the file (use --prune to delete)",
            [n for n in result.not_in_file if n not in result.pruned],
        ),
    ]
    return [(label, names) for label, names in details if names]


# -- trigger -------------------------------------------------------------------------------------
