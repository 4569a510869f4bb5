"""The ``dagrelay local`` verbs, the local stack (``dagrelay.local``, the ``local`` extra):

    dagrelay local up [--project DIR]
    dagrelay local down
    dagrelay local demo

Each checks that the extra is installed, then imports the stack (the Pub/Sub and BigQuery
clients, the router) only when it runs; a missing extra is one line naming the pip command.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dagrelay.cli.app import PLAIN_HELP, Group, app, reports_errors
from dagrelay.errors import ConfigError

if TYPE_CHECKING:
    from types import ModuleType

# The top-level modules of the `local` extra (pyproject.toml), as they are imported.
EXTRA_MODULES = ("bqemulator", "gcp_storage_emulator", "duckdb", "numpy", "requests")
INSTALL = "pip install 'dagrelay[local]'"

local_app = typer.Typer(
    help="The local stack: Pub/Sub emulator, PostgreSQL, GCS and BigQuery stand-ins, the router.",
    no_args_is_help=True,
    rich_markup_mode=PLAIN_HELP,
    cls=Group,
)
app.add_typer(local_app, name="local")


def missing_extra(
    modules: Sequence[str] = EXTRA_MODULES, find: Callable[[str], Any] = find_spec
) -> list[str]:
    """The modules of the ``local`` extra that cannot be imported here."""
    return [name for name in modules if find(name) is None]


def _stack() -> ModuleType:
    """``dagrelay.local.commands``, or a ConfigError naming the pip command."""
    missing = missing_extra(EXTRA_MODULES)
    if missing:
        raise ConfigError(
            f"the local stack needs the local extra (missing: {', '.join(missing)}): {INSTALL}"
        )
    from dagrelay.local import commands

    return commands


@local_app.command("up")
@reports_errors
def local_up(
    project: Annotated[
        Path | None,
        typer.Option(
            help="A team's project (dagrelay init): its handlers and pipelines load in the "
            "router, which restarts on the same port when one of its files changes."
        ),
    ] = None,
) -> None:
    """Start the stack and keep it running until Ctrl-C or `dagrelay local down`; print the
    variables (DATABASE_URL, PUBSUB_EMULATOR_HOST, ...) that point dagrelay at it."""
    _stack().up(project=project)


@local_app.command("down")
@reports_errors
def local_down() -> None:
    """Stop a stack started with `dagrelay local up` (signals its owner; kills leftovers by
    PID)."""
    _stack().down()


@local_app.command("demo")
@reports_errors
def local_demo() -> None:
    """Start the stack, ingest two CSVs, run the example pipeline on the BigQuery stand-in,
    print the result and stop everything."""
    _stack().demo()
