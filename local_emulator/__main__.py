"""``python -m local_emulator up | down | demo | worker | bench``: ``dagrelay local``'s commands
(dagrelay/local/commands.py) and the checkout's benchmarks."""

from __future__ import annotations

import typer

from dagrelay.local import commands
from local_emulator.bench import command as bench_command

app = typer.Typer(add_completion=False, help=commands.app.info.help)
for command in (commands.up, commands.down, commands.demo, commands.worker, bench_command.bench):
    app.command()(command)

if __name__ == "__main__":
    app()
