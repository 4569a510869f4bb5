"""The local stack's commands: ``dagrelay local up | down | demo`` (dagrelay/cli/local.py), and
``python -m dagrelay.local worker`` (the pull workers a stack with ``workers=N`` starts)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from types import FrameType

import typer
from rich.console import Console

from dagrelay.errors import DagrelayError

# Each command imports what it uses when it runs: a pull worker (``worker``) starts without the
# stack's and the demo's modules (the data services' clients, pyarrow among them: seconds of
# CPU per process, and threads).

app = typer.Typer(add_completion=False, help="Run dagrelay's whole system on this machine.")
console = Console(soft_wrap=True)


@app.command()
def up(
    project: Path | None = typer.Option(  # noqa: B008 - typer's way of declaring an option
        None,
        help="A team's project (dagrelay init): its handlers and pipelines load in the router, "
        "which restarts on the same port when one of its files changes.",
    ),
) -> None:
    """Start the stack and keep it running until Ctrl-C or `dagrelay local down`."""
    from dagrelay.local.processes import StackError  # noqa: PLC0415 - see the imports
    from dagrelay.local.stack import (  # noqa: PLC0415
        ProjectWatcher,
        Stack,
        StackConfig,
        read_state,
        state_file,
        write_state,
    )

    if read_state() is not None:
        console.print(f"[red]a stack seems to be up already ({state_file()}); run down first")
        raise typer.Exit(1)
    try:
        watcher = ProjectWatcher(project) if project is not None else None
    except DagrelayError as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(2) from None
    stack = Stack(StackConfig(project=project))
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        info = stack.start()
        write_state(info, os.getpid())
        console.print("[bold green]dagrelay local stack is up[/]")
        for key, value in info.env().items():
            console.print(f"  export {key}={value}")
        console.print("  # gcloud does not read PUBSUB_EMULATOR_HOST; for `gcloud pubsub ...`:")
        console.print(
            f"  export CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB=http://{info.pubsub_emulator_host}/"
            " CLOUDSDK_AUTH_DISABLE_CREDENTIALS=true"
        )
        console.print(f"  router:  {info.router_url}   dashboard: {info.url('status')}/")
        console.print(f"  operator dashboard (trigger, rerun, cancel): {info.url('operate')}/")
        console.print(f"  topic:   projects/{info.project_id}/topics/{info.events_topic}")
        console.print(f"  logs:    {info.log_dir}")
        console.print("Stop with Ctrl-C or `dagrelay local down`.")
        if watcher is not None:
            console.print(f"  project: {watcher.project.root} (reloaded on change)")
        while not stopping:
            stack.check_alive()
            if watcher is not None and watcher.changed():
                stack.reload_router()
                console.print("project changed: router restarted")
            time.sleep(0.5)  # a supervision loop, not synchronisation
    except StackError as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(1) from exc
    finally:
        stack.stop()
        state_file().unlink(missing_ok=True)
        console.print("stack stopped")


@app.command()
def down() -> None:
    """Stop a stack started with `up` (signals its owner; kills leftovers by PID)."""
    from dagrelay.local.stack import read_state, state_file  # noqa: PLC0415 - see the imports

    state = read_state()
    if state is None:
        console.print("no local stack is up")
        return
    owner = int(str(state["owner_pid"]))
    try:
        os.kill(owner, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while state_file().exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    except ProcessLookupError:
        pass
    pids = state.get("pids")
    for pid in json.loads(json.dumps(pids)).values() if isinstance(pids, dict) else []:
        try:
            os.killpg(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            continue
    state_file().unlink(missing_ok=True)
    console.print("local stack is down")


@app.command()
def demo() -> None:
    """Start the stack, run the example pipeline end to end, print it, stop everything."""
    from dagrelay.local import demo as demo_mod  # noqa: PLC0415 - see the imports

    ok = demo_mod.run(console)
    raise typer.Exit(0 if ok else 1)


@app.command()
def worker(
    subscription: str = typer.Option("dagrelay-events-workers", help="Pull subscription."),
) -> None:
    """Pull worker sharing the router's code (the stack starts these with `workers=N`)."""
    from dagrelay.local.worker import Worker  # noqa: PLC0415 - loads the router only here

    Worker(subscription).run()
