"""The ``dagrelay`` Typer application and its error reporting: a dagrelay error is one line per
problem on stderr and exit code 2; an unreachable database is exit code 1.

The entry module stays light: ``dagrelay --help`` loads Typer and the verbs' signatures only.
Each verb imports what it needs (SQLAlchemy, rich, the Pub/Sub client, Alembic) when it runs;
``tests/integration/test_cli_imports.py`` and the ``cli-entry-light`` import contract hold it."""

from __future__ import annotations

import functools
import getpass
import sys
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from typer.core import TyperGroup, TyperOption

from dagrelay.errors import DagrelayError, PipelineError

P = ParamSpec("P")
R = TypeVar("R")
UNDEFINED_TABLE = "42P01"

# Help in plain text: Typer's rich help panels load rich's console and tables for every --help
# (measured alternating on the loaded 2-core machine: 0.9-2.0 s with panels, 0.5-1.3 s without).
# Every Typer of the CLI says so.
PLAIN_HELP = None


class Group(TyperGroup):
    """A command group whose --help, when not given, is False rather than None. Typer coerces
    every parameter value that is not a bool through a pydantic TypeAdapter, which imports
    pydantic (~0.1 s of CPU): a None meant that ``dagrelay status --help`` paid for pydantic
    to learn that ``dagrelay --help`` was not asked. Every Typer of the CLI uses it."""

    def get_help_option(self, ctx: Any) -> TyperOption | None:  # Any: typer vendors click
        option = super().get_help_option(ctx)
        if option is not None and option.default is None:
            option.default = False
        return option


app = typer.Typer(
    help="dagrelay: a serverless DAG engine on PostgreSQL and Pub/Sub.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=PLAIN_HELP,
    pretty_exceptions_show_locals=False,  # locals may hold the database URL
    cls=Group,
)
db_app = typer.Typer(
    help="The metadata database.", no_args_is_help=True, rich_markup_mode=PLAIN_HELP, cls=Group
)
pipeline_app = typer.Typer(
    help="Pipeline definition files (YAML).",
    no_args_is_help=True,
    rich_markup_mode=PLAIN_HELP,
    cls=Group,
)


def _print_version(wanted: bool) -> None:
    """``--version``: the installed distribution's version (pyproject's, through the package
    metadata), then exit. importlib.metadata is imported here, so only --version pays for it."""
    if not wanted:
        return
    from importlib.metadata import version

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
    """Turn dagrelay errors into one line per problem on stderr and exit code 2, no traceback;
    close the process's database pool when the verb ends, however it ends."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except PipelineError as exc:
            fail(exc.problems, 2)
        except DagrelayError as exc:
            fail([str(exc)], 2)
        except Exception as exc:
            database_failure(exc)
            raise
        finally:
            close_pool()

    return wrapper


def close_pool() -> None:
    """Dispose the process-wide engine if the verb built one: its connections end with the
    verb (a Terminate to the server), not when the process exits or, in-process (a test), when
    the garbage collector finds them. A verb that never loaded the store loads nothing here."""
    if "dagrelay.store.db" not in sys.modules:
        return
    from dagrelay.store.db import get_engine

    get_engine.cache_clear()


def database_failure(exc: Exception) -> None:
    """An unreachable database, or one without the tables: exit code 1 with one line. Returns
    for anything else (the caller re-raises). A driver is looked at only if a verb loaded it:
    pg8000 alone for a read verb (``dagrelay.store.direct``), SQLAlchemy's errors otherwise."""
    if "dagrelay.store.direct" in sys.modules:
        from dagrelay.store.direct import driver_error

        found = driver_error(exc)
        if found is not None:
            _direct_failure(*found)
    if "sqlalchemy" not in sys.modules:
        return
    from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError

    from dagrelay.store.db import database_error

    if isinstance(exc, OperationalError | InterfaceError):
        fail([f"cannot reach the database: {exc.orig}"], 1)
    if isinstance(exc, ProgrammingError):
        _missing_table(*database_error(exc))


def _direct_failure(code: str | None, message: str) -> None:
    """pg8000's own error on the read path: ``code`` None when the database is unreachable."""
    if code is None:
        fail([f"cannot reach the database: {message}"], 1)
    _missing_table(code, message)


def _missing_table(code: str | None, message: str) -> None:
    if code == UNDEFINED_TABLE:
        fail([f"{message}: run `dagrelay db upgrade` first"], 1)


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
