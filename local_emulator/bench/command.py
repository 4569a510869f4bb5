"""The ``bench`` command, shared by ``python -m local_emulator bench`` and
``python -m local_emulator.bench``; the suite itself is imported only when it runs."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(add_completion=False)


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="Reduced sizes: about a minute."),
    out: str = typer.Option("bench-results.json", "--out", help="Where to write the JSON."),
) -> None:
    """Benchmark hop latency, throughput, fan-in/fan-out and a wide batch."""
    from local_emulator.bench import suite  # noqa: PLC0415 - loaded only for this command

    ok = suite.run(Console(soft_wrap=True), quick=quick, out=out)
    raise typer.Exit(0 if ok else 1)
