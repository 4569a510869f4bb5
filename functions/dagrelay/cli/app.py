"""The ``dagrelay`` Typer application and its error reporting: a dagrelay error is one line per
problem on stderr and exit code 2; an unreachable database is exit code 1."""

from __future__ import annotations

import functools
import getpass
from collections.abc import Callable
from typing import Annotated, NoReturn, ParamSpec, TypeVar

import typer
from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError

from dagrelay.errors import DagrelayError, PipelineError
from dagrelay.store.db import database_error

P = ParamSpec("P")
R = TypeVar("R")
UNDEFINED_TABLE = "42P01"

app = typer.Typer(
    help="dagrelay: a serverless DAG engine on PostgreSQL and Pub/Sub.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold the database URL
)
db_app = typer.Typer(help="The metadata database.", no_args_is_help=True)
pipeline_app = typer.Typer(help="Pipeline definition files (YAML).", no_args_is_help=True)


def _print_version(wanted: bool) -> None:
    """``--version``: the installed distribution's version (pyproject's, through the package
    metadata), then exit. importlib.metadata is imported here, so only --version pays for it."""
    if not wanted:
        return
    from importlib.metadata import version  # noqa: PLC0415

    typer.echo(f"dagrelay {version('dagrelay')}")
    raise typer.Exit


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Options that come before any verb."""


app.add_typer(db_app, name="db")
app.add_typer(pipeline_app, name="pipeline")


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn dagrelay errors into one line per problem on stderr and exit code 2, no traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except PipelineError as exc:
            fail(exc.problems, 2)
        except DagrelayError as exc:
            fail([str(exc)], 2)
        except (OperationalError, InterfaceError) as exc:
            fail([f"cannot reach the database: {exc.orig}"], 1)
        except ProgrammingError as exc:
            code, message = database_error(exc)
            if code != UNDEFINED_TABLE:
                raise
            fail([f"{message}: run `dagrelay db upgrade` first"], 1)

    return wrapper


def fail(lines: list[str], code: int) -> NoReturn:
    for line in lines:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def current_user() -> str:
    """Who runs the command, for ``triggered_by`` and the worker id (``cli:<user>``)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):
        return "unknown"
