"""The ``dagrelay pool`` verbs:

    dagrelay pool set NAME --slots N [--description TEXT]
    dagrelay pool list

A task names its pool (``pool:``, ``pool_slots:`` in a pipeline file); a task that cannot get
its slots waits QUEUED and starts when a slot is freed (``dagrelay.engine.pools``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from dagrelay.cli.app import PLAIN_HELP, Group, app, reports_errors
from dagrelay.cli.common import operator_engine

if TYPE_CHECKING:
    from rich.table import Table

    from dagrelay.store import pools as store

pool_app = typer.Typer(
    help="Named pools of slots (the pools table).",
    no_args_is_help=True,
    rich_markup_mode=PLAIN_HELP,
    cls=Group,
)
app.add_typer(pool_app, name="pool")


@pool_app.command("set")
@reports_errors
def pool_set(
    name: Annotated[str, typer.Argument(help="The pool.")],
    slots: Annotated[int, typer.Option("--slots", help="Attempts that may hold a slot at once.")],
    description: Annotated[str | None, typer.Option(help="What the pool protects.")] = None,
) -> None:
    """Create or change a pool: a lowered count holds new claims at once, a raised one starts
    queued tasks."""
    from dagrelay.engine import pools as engine_pools

    pool = engine_pools.set_pool(operator_engine(), name, slots, description)
    typer.echo(f"pool {pool.name}: {pool.slots} slots")


@pool_app.command("list")
@reports_errors
def pool_list() -> None:
    """Every pool: slots, slots in use, tasks queued."""
    from rich.console import Console

    from dagrelay.store import pools as store
    from dagrelay.store.direct import reading

    with reading() as conn:
        rows = store.pools(conn)
    if not rows:
        typer.echo("no pools (dagrelay pool set NAME --slots N)")
        return
    Console(width=160).print(pool_table(rows))


def pool_table(rows: list[store.Pool]) -> Table:
    from rich.table import Table

    table = Table(title="pools", title_justify="left")
    for column in ("pool", "slots", "in use", "queued", "description"):
        table.add_column(column)
    for p in rows:
        table.add_row(p.name, str(p.slots), str(p.in_use), str(p.queued), p.description or "")
    return table
