"""The ``dagrelay`` console script.

    dagrelay db upgrade [--revision head]
    dagrelay pipeline validate FILE.yaml
    dagrelay pipeline apply FILE.yaml [--prune] [--dry-run]
    dagrelay trigger PIPELINE BATCH_ID [--param k=v ...] [--start-task NAME]
    dagrelay status [BATCH_ID] [--pipeline P] [--json] [--wait]
    dagrelay validate | backfill | rerun | cancel | history | explain | pipeline export
             (the operator's commands: dagrelay.cli_ops)

Settings come from ``dagrelay.config`` (``DATABASE_URL``, ``DAGRELAY_PROJECT_ID``,
``DAGRELAY_EVENTS_TOPIC``, ...). A dagrelay error is one line per problem on stderr and exit
code 2; an unreachable database is exit code 1.
"""

from __future__ import annotations

import functools
import getpass
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from google.api_core.exceptions import GoogleAPIError
from google.cloud import pubsub_v1
from jsonschema.exceptions import best_match
from rich.table import Table
from rich.text import Text
from sqlalchemy import Connection
from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError

from dagrelay import messages, migrate, packaging, pipelines
from dagrelay.config import get_settings
from dagrelay.db import database_error, get_engine
from dagrelay.errors import BadMessage, DagrelayError, PipelineError

P = ParamSpec("P")
R = TypeVar("R")
PUBLISH_TIMEOUT_S = 60.0
UNDEFINED_TABLE = "42P01"
STATUS_STYLES = {
    "NEW": "blue",
    "PROCESSING": "cyan",
    "RUNNING": "cyan",
    "RETRY": "yellow",
    "SUCCESS": "green",
    "ERROR": "bold red",
    "FAILED": "bold red",
    "UPSTREAM_FAILED": "red",
    "SKIPPED": "dim",
    "CANCELLED": "dim",
}

app = typer.Typer(
    help="dagrelay: a serverless DAG engine on PostgreSQL and Pub/Sub.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold the database URL
)
db_app = typer.Typer(help="The metadata database.", no_args_is_help=True)
pipeline_app = typer.Typer(help="Pipeline definition files (YAML).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(pipeline_app, name="pipeline")


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn dagrelay errors into one line per problem on stderr and exit code 2, no traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except PipelineError as exc:
            _fail(exc.problems, 2)
        except DagrelayError as exc:
            _fail([str(exc)], 2)
        except (OperationalError, InterfaceError) as exc:
            _fail([f"cannot reach the database: {exc.orig}"], 1)
        except ProgrammingError as exc:
            code, message = database_error(exc)
            if code != UNDEFINED_TABLE:
                raise
            _fail([f"{message}: run `dagrelay db upgrade` first"], 1)

    return wrapper


def _fail(lines: list[str], code: int) -> NoReturn:
    for line in lines:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


# -- db ------------------------------------------------------------------------------------------


@db_app.command("upgrade")
@reports_errors
def db_upgrade(
    revision: Annotated[str, typer.Option(help="Alembic revision to upgrade to.")] = "head",
) -> None:
    """Run the migrations (alembic upgrade) on the configured database."""
    engine = get_engine()
    migrate.upgrade(engine, revision)
    typer.echo(f"database at revision {migrate.current(engine) or 'base'}")


@app.command("build-function")
@reports_errors
def build_function(
    out: Annotated[Path, typer.Option(help="Where to write the zip.")] = Path(
        "dist/function-source.zip"
    ),
) -> None:
    """Build the Cloud Function source archive (main.py, the package, named SQL, message
    schemas, pinned requirements.txt) for Terraform or `gcloud functions deploy`."""
    path = packaging.build_archive(out)
    typer.echo(f"{path} ({path.stat().st_size} bytes)")


# -- pipeline ------------------------------------------------------------------------------------

PipelineFile = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="Pipeline YAML file.")
]


@pipeline_app.command("validate")
@reports_errors
def pipeline_validate(file: PipelineFile) -> None:
    """Check a pipeline file (schema, graph, handlers, params) without touching the database."""
    spec = _load_valid(file)
    typer.echo(f"{file.name}: pipeline {spec.pipeline} is valid ({len(spec.tasks)} tasks)")


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
    """Validate a pipeline file, then write it into tasks and task_dependencies."""
    spec = _load_valid(file)
    with _transaction(rollback=dry_run) as conn:
        result = pipelines.apply(conn, spec, prune=prune)
    prefix = "dry run, nothing written: " if dry_run else ""
    typer.echo(f"{prefix}pipeline {spec.pipeline}: {result}")
    for label, names in _apply_details(result):
        typer.echo(f"  {label}: {', '.join(names)}")


def _load_valid(file: Path) -> pipelines.PipelineSpec:
    spec = pipelines.load_pipeline(file)
    pipelines.validate(spec, pipelines.registered_handlers())
    return spec


@contextmanager
def _transaction(*, rollback: bool) -> Iterator[Connection]:
    with get_engine().connect() as conn, conn.begin() as tx:
        yield conn
        if rollback:
            tx.rollback()


def _apply_details(result: pipelines.ApplyResult) -> list[tuple[str, list[str]]]:
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


@app.command()
@reports_errors
def trigger(
    pipeline: Annotated[str, typer.Argument(help="The pipeline to run.")],
    batch_id: Annotated[str, typer.Argument(help="Identifies the run, e.g. 2024-03.")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Batch parameter k=v (v is JSON if it parses)."),
    ] = None,
    start_task: Annotated[
        str | None, typer.Option(help="Run only this task and its downstream.")
    ] = None,
) -> None:
    """Publish a start_batch message to the events topic."""
    message = start_batch_message(pipeline, batch_id, parse_params(param or []), start_task)
    settings = get_settings()
    message_id = publish(settings.project_id, settings.events_topic, message)
    typer.echo(f"published start_batch {pipeline}/{batch_id} (message id {message_id})")


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["n=3", "month=2024-03"]`` -> ``{"n": 3, "month": "2024-03"}``."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not k=v", param_hint="--param")
        params[key] = _json_or_text(raw)
    return params


def _json_or_text(raw: str) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(name)  # NaN and Infinity are not JSON

    try:
        return json.loads(raw, parse_constant=no_constants)
    except ValueError:
        return raw


def start_batch_message(
    pipeline: str, batch_id: str, params: Mapping[str, Any], start_task: str | None
) -> dict[str, Any]:
    """The start_batch message, checked against its JSON Schema (BadMessage if invalid)."""
    message: dict[str, Any] = {
        "action": "start_batch",
        "pipeline": pipeline,
        "batch_id": batch_id,
        "params": dict(params),
        "triggered_by": f"cli:{_user()}",
    }
    if start_task is not None:
        message["start_task"] = start_task
    error = best_match(messages.validator("start_batch").iter_errors(message))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(message)"
        raise BadMessage(f"start_batch: {where}: {error.message}")
    return message


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):
        return "unknown"


def publish(project_id: str, topic_id: str, message: Mapping[str, Any]) -> str:
    """Publish and wait until Pub/Sub accepted it; returns the message id."""
    client = pubsub_v1.PublisherClient()
    topic = client.topic_path(project_id, topic_id)
    try:
        future = client.publish(topic, json.dumps(message).encode(), action=message["action"])
        return str(future.result(timeout=PUBLISH_TIMEOUT_S))
    except (GoogleAPIError, TimeoutError) as exc:
        raise DagrelayError(f"publishing to {topic} failed: {exc}") from exc
    finally:
        client.stop()


# -- status --------------------------------------------------------------------------------------


def _json_default(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def batch_table(batch: Mapping[str, Any]) -> Table:
    """A batch report (one item of ``batch_report``) as a table: its status in the title,
    who triggered it and when in the caption."""
    title = Text.assemble(f"{batch['pipeline']} / {batch['batch_id']}  ", _status(batch["status"]))
    table = Table(title=title, caption=_caption(batch), title_justify="left")
    table.add_column("task", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("attempt", justify="right")
    table.add_column("started")
    table.add_column("duration", justify="right")
    table.add_column("error / root cause", overflow="fold", min_width=10)
    for task in batch["tasks"]:
        table.add_row(
            Text(task["task"]),
            _status(task["status"]),
            str(task["attempt"]),
            _time(task["started_at"], "%H:%M:%S"),
            _duration(task["duration_s"]),
            Text(_problem(task)),
        )
    return table


def dead_letter_table(letters: list[Mapping[str, Any]]) -> Table:
    """Messages Pub/Sub gave up delivering for this batch (the dead_letters table)."""
    table = Table(title=Text("dead letters", style="bold red"), title_justify="left")
    for column in ("received", "action", "task", "deliveries", "reason"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        table.add_row(
            _time(letter["received_at"], "%H:%M:%S"),
            letter["action"] or "",
            letter["task"] or "",
            str(letter["delivery_attempts"] or ""),
            letter["reason"],
        )
    return table


def _status(value: str) -> Text:
    return Text(value, style=STATUS_STYLES.get(value, ""))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _time(value: datetime | None, layout: str = "%Y-%m-%d %H:%M:%S %Z") -> str:
    return "" if value is None else value.strftime(layout)


def _caption(batch: Mapping[str, Any]) -> str:
    text = f"triggered by {batch['triggered_by']} at {_time(batch['created_at'])}"
    if batch["finished_at"] is not None:
        text += f", finished at {_time(batch['finished_at'])}"
    return text


def _problem(task: Mapping[str, Any]) -> str:
    if task["root_cause_task"]:
        return f"upstream: {task['root_cause_task']} failed"
    error = str(task["error"] or "")
    return error.splitlines()[0][:200] if error else ""


# The operator's commands register themselves on ``app`` (they use the helpers above).
from dagrelay import cli_ops  # noqa: E402, F401
