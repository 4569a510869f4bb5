"""Cold start of the two Cloud Functions: ``python -m local_emulator.coldstart``.

For each entry point of ``functions/main.py`` — the router, sent a pushed ``sweep``, and the
status function, sent ``GET /`` — and for each of ``--runs`` fresh processes, it measures
``import main`` (``python -X importtime``), the time from starting functions-framework until it
accepts connections and until the first request is answered, and the memory of the process tree
after that request (RSS of its largest process, PSS of the tree). It prints the medians.
``--source DIR`` measures another checkout's ``functions/`` (say, the previous commit's) against
the same database: the package is taken from that directory through PYTHONPATH.

The Pub/Sub emulator and a migrated database (``dagrelay_coldstart``, or ``--database-url``) are
set up once; every process is started on a loopback port and stopped by its PID.
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import requests
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import make_url

from dagrelay.local import infra, processes
from dagrelay.local.stack import DEFAULT_DATABASE_URL

PROJECT = "dagrelay-coldstart"
READY_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Sample:
    import_ms: float
    ready_ms: float
    first_ms: float
    rss_mb: float
    pss_mb: float


@dataclass(frozen=True)
class Target:
    name: str  # the entry point in main.py
    signature: str
    request: Callable[[int], requests.Response]


def _push_sweep(port: int) -> requests.Response:
    """A Pub/Sub push of ``{"action": "sweep"}``, as the push subscription sends it."""
    body = {
        "message": {
            "data": base64.b64encode(json.dumps({"action": "sweep"}).encode()).decode(),
            "attributes": {"action": "sweep"},
            "messageId": f"coldstart-{time.time_ns()}",
        },
        "subscription": f"projects/{PROJECT}/subscriptions/coldstart",
    }
    url = f"http://127.0.0.1:{port}/projects/{PROJECT}/topics/dagrelay-events"
    return requests.post(url, json=body, timeout=REQUEST_TIMEOUT_S)


def _get_root(port: int) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{port}/", timeout=REQUEST_TIMEOUT_S)


TARGETS = (Target("router", "cloudevent", _push_sweep), Target("status", "http", _get_root))


def import_ms(source: Path, env: Mapping[str, str]) -> float:
    """Cumulative ``import main`` time (ms) in a fresh interpreter, from -X importtime."""
    probe = "import dagrelay, main; print(dagrelay.__file__)"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", probe],
        cwd=source,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    package = Path(result.stdout.strip())
    if not package.is_relative_to(source):
        raise processes.StackError(f"dagrelay came from {package}, not from {source}")
    for line in result.stderr.splitlines():
        if line.endswith("| main"):
            return int(line.split("|")[1]) / 1000
    raise processes.StackError(f"no import time for main in:\n{result.stderr[-2000:]}")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split()
        for child in children:
            found += _tree(int(child))
    return found


def _memory_mb(pid: int) -> tuple[float, float]:
    """(RSS of the largest process, PSS of the whole tree) in MiB."""
    rss, pss = [], 0
    for member in _tree(pid):
        for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "Rss":
                rss.append(int(value.split()[0]))
            elif key == "Pss":
                pss += int(value.split()[0])
    return max(rss) / 1024, pss / 1024


def one_run(target: Target, source: Path, env: Mapping[str, str], workdir: Path) -> Sample:
    imported = import_ms(source, env)
    port = processes.free_port()
    argv = [
        sys.executable,
        "-m",
        "functions_framework",
        *("--source", str(source / "main.py"), "--target", target.name),
        *("--signature-type", target.signature, "--host", "127.0.0.1", "--port", str(port)),
    ]
    started = time.perf_counter()
    proc = processes.spawn(f"coldstart:{target.name}", argv, workdir / f"{port}.log", env)
    try:
        processes.wait_for(
            lambda: processes.port_open(port) or not proc.alive(),
            READY_TIMEOUT_S,
            f"functions-framework ({target.name})",
        )
        if not proc.alive():
            raise processes.StackError(f"functions-framework exited:\n{proc.log_tail()}")
        ready = time.perf_counter()
        response = target.request(port)
        first = time.perf_counter()
        if response.status_code != 200:
            raise processes.StackError(
                f"{target.name} answered {response.status_code}:\n{proc.log_tail()}"
            )
        rss, pss = _memory_mb(proc.pid)
    finally:
        proc.stop()
    return Sample(imported, (ready - started) * 1000, (first - started) * 1000, rss, pss)


def _environment(source: Path, database_url: str, emulator: str) -> dict[str, str]:
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("DAGRELAY_", "PYTHONPATH"))
    }
    return {
        **inherited,
        "PYTHONPATH": str(source),
        "DATABASE_URL": database_url,
        "PUBSUB_EMULATOR_HOST": emulator,
        "DAGRELAY_PROJECT_ID": PROJECT,
    }


def _table(source: Path, results: dict[str, list[Sample]]) -> Table:
    table = Table(title=f"cold start of {source}/main.py (medians)")
    columns = ("import ms", "ready ms", "1st answer ms", "RSS MiB", "PSS MiB")
    for column in ("function", "runs", *columns):
        table.add_column(column, justify="right")
    for name, samples in results.items():
        medians = [
            statistics.median(getattr(s, field) for s in samples)
            for field in ("import_ms", "ready_ms", "first_ms", "rss_mb", "pss_mb")
        ]
        table.add_row(name, str(len(samples)), *(f"{m:.0f}" for m in medians))
    return table


FUNCTIONS = Path(__file__).resolve().parents[1] / "functions"  # the checkout's
DEFAULT_URL = make_url(DEFAULT_DATABASE_URL).set(database="dagrelay_coldstart")


def main(
    runs: Annotated[int, typer.Option(min=1, help="Fresh processes per function.")] = 5,
    source: Annotated[Path, typer.Option(help="The functions/ directory to measure.")] = (
        FUNCTIONS
    ),
    database_url: Annotated[str, typer.Option(help="Created and migrated if missing.")] = (
        DEFAULT_URL.render_as_string(hide_password=False)
    ),
) -> None:
    """Measure the cold start of the router and the status function."""
    source = source.resolve()
    infra.ensure_database(database_url)
    infra.upgrade_database(database_url)
    with tempfile.TemporaryDirectory(prefix="dagrelay-coldstart-") as tmp:
        workdir = Path(tmp)
        port = processes.free_port()
        emulator = processes.start_pubsub_emulator(port, PROJECT, workdir)
        try:
            env = _environment(source, database_url, f"127.0.0.1:{port}")
            results = {
                t.name: [one_run(t, source, env, workdir) for _ in range(runs)] for t in TARGETS
            }
        finally:
            emulator.stop()
    Console().print(_table(source, results))


if __name__ == "__main__":
    typer.run(main)
