"""``python -m local_emulator.bench.guard [--baseline DIR] [--reps N]``: what the dependency
guard and ``pipeline apply`` cost.

Rows: the cycle check of one edge on 20 stacked diamonds (61 tasks, 2^20 paths from the top)
and on 5,000-task pipelines (a chain; 50 parallel chains of 100), both an accepted edge (a new
root above the top: the whole pipeline is searched) and a refused one (bottom -> top: a cycle
whose path is reported); a no-op apply of a 5,000-task file; the same file with one task changed.

Each column gets a throwaway database of its own. ``new`` is this checkout. With ``--baseline``
(a checkout of the previous code) the ``old`` column uses the same database downgraded to
revision 0004 (the previous guard, bounded by a statement timeout) and the baseline's apply, run
in a child process with that checkout's code and schema.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from dagrelay.pipelines.apply import apply as apply_pipeline
from dagrelay.pipelines.spec import load_pipeline
from dagrelay.store import migrate
from local_emulator.bench.db import (
    CHAIN,
    insert_pipeline,
    median,
    ms,
    task_name,
    throwaway_database,
)

TIMEOUT_S = 60  # the previous guard's exponential cases are cut off here
DIAMONDS = 20
BIG = 5000
CHAINS_OF_100 = "SELECT g, g - 1 FROM generate_series(2, :n) g WHERE mod(g, 100) <> 1"
# Diamond k (0-based) is top 3k+1 -> left 3k+2, right 3k+3 -> top 3k+4 of the next one.
DIAMOND_EDGES = (
    "SELECT 3 * k + s, 3 * k + 1 "
    "FROM generate_series(0, (:n - 1) / 3 - 1) k, (VALUES (2), (3)) v(s) "
    "UNION ALL SELECT 3 * k + 4, 3 * k + s "
    "FROM generate_series(0, (:n - 1) / 3 - 1) k, (VALUES (2), (3)) v(s)"
)


def shapes() -> list[tuple[str, str, int, str, int]]:
    """(row label, pipeline, tasks, edge SQL of (child, parent) numbers, a task below 1)."""
    return [
        (f"{DIAMONDS} stacked diamonds", "diamonds", 3 * DIAMONDS + 1, DIAMOND_EDGES, 61),
        (f"{BIG}-task chain", "chain", BIG, CHAIN, BIG),
        (f"{BIG} tasks, 50 chains of 100", "chains", BIG, CHAINS_OF_100, 100),
    ]


def insert_shape(db: Engine, pipeline: str, n: int, edges: str) -> None:
    """Tasks 1..n and the shape's edges (inserted without the guard: superuser), and a root."""
    insert_pipeline(db, pipeline, n, edges, guard=False)
    with db.begin() as conn:
        conn.execute(
            text("INSERT INTO tasks (name, pipeline, handler) VALUES (:name, :p, 'python.noop')"),
            {"name": f"{pipeline}-root", "p": pipeline},
        )


def time_edge(db: Engine, child: str, parent: str) -> tuple[float, str]:
    """Seconds to insert (and roll back) one edge, and how it ended."""
    with db.connect() as conn:
        conn.execute(text(f"SET statement_timeout = '{TIMEOUT_S}s'"))
        started = time.perf_counter()
        try:
            conn.execute(
                text(
                    "INSERT INTO task_dependencies (child_task_id, parent_task_id) "
                    "SELECT c.task_id, p.task_id FROM tasks c, tasks p "
                    "WHERE c.name = :child AND p.name = :parent"
                ),
                {"child": child, "parent": parent},
            )
            outcome = "accepted"
        except DBAPIError as exc:
            outcome = "refused" if "would create a cycle" in str(exc) else "timeout"
        elapsed = time.perf_counter() - started
        conn.rollback()
    return elapsed, outcome


def cycle_rows(db: Engine, reps: int) -> dict[str, tuple[float, str]]:
    results: dict[str, tuple[float, str]] = {}
    for label, pipeline, _, _, below in shapes():
        top, bottom = task_name(pipeline, 1), task_name(pipeline, below)
        for kind, child, parent in (
            ("accepted edge", top, f"{pipeline}-root"),
            ("refused edge", top, bottom),
        ):
            runs = [time_edge(db, child, parent) for _ in range(reps)]
            outcome = runs[0][1]
            results[f"cycle check, {label}: {kind}"] = (median([r[0] for r in runs]), outcome)
            if outcome == "timeout":
                break
    return results


def pipeline_file(directory: Path, *, changed: bool) -> Path:
    """BIG tasks in 50 chains of 100; ``changed``: the first task's timeout differs."""
    tasks = []
    for i in range(1, BIG + 1):
        task: dict[str, object] = {"name": task_name("applied", i), "handler": "python.noop"}
        if i % 100 != 1:
            task["parents"] = [task_name("applied", i - 1)]
        tasks.append(task)
    if changed:
        tasks[0]["timeout_s"] = 60
    path = directory / ("changed.yaml" if changed else "applied.yaml")
    path.write_text(yaml.safe_dump({"pipeline": "applied", "tasks": tasks}), encoding="utf-8")
    return path


def apply_here(url: str, path: Path) -> float:
    db = create_engine(url, pool_size=1)
    spec = load_pipeline(path)
    try:
        started = time.perf_counter()
        with db.begin() as conn:
            apply_pipeline(conn, spec)
        return time.perf_counter() - started
    finally:
        db.dispose()


OLD_APPLY = """
import sys, time
from sqlalchemy import create_engine
from dagrelay import pipelines
db = create_engine(sys.argv[1], pool_size=1)
spec = pipelines.load_pipeline(sys.argv[2])
started = time.perf_counter()
with db.begin() as conn:
    pipelines.apply(conn, spec)
print(time.perf_counter() - started)
"""


def apply_in(baseline: Path) -> Callable[[str, Path], float]:
    """Apply with the baseline checkout's code and schema, in a child process."""

    def run(url: str, path: Path) -> float:
        env = {
            **os.environ,
            "PYTHONPATH": str(baseline / "functions"),
            "DAGRELAY_SCHEMA_DIR": str(baseline / "schema"),
        }
        done = subprocess.run(
            [sys.executable, "-c", OLD_APPLY, url, str(path)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=1800,
        )
        return float(done.stdout.strip().splitlines()[-1])

    return run


def apply_rows(url: str, apply: Callable[[str, Path], float], reps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        unchanged = pipeline_file(Path(directory), changed=False)
        changed = pipeline_file(Path(directory), changed=True)
        first = apply(url, unchanged)
        noop = median([apply(url, unchanged) for _ in range(reps)])
        one = apply(url, changed)
    return {
        f"apply {BIG} tasks: first (creates all)": first,
        f"apply {BIG} tasks: no-op": noop,
        f"apply {BIG} tasks: one task changed": one,
    }


def measure(old: bool, apply: Callable[[str, Path], float], reps: int) -> dict[str, str]:
    """Every row of one column, as text."""
    with throwaway_database("guard_old" if old else "guard") as url:
        db = create_engine(url, pool_size=1)
        try:
            if old:
                migrate.downgrade(db, "0004")
            for _, pipeline, n, edges, _ in shapes():
                insert_shape(db, pipeline, n, edges)
            cells = {k: _cell(s, o) for k, (s, o) in cycle_rows(db, 1 if old else reps).items()}
        finally:
            db.dispose()
        cells.update({k: f"{ms(s):,.1f} ms" for k, s in apply_rows(url, apply, reps).items()})
    return cells


def _cell(seconds: float, outcome: str) -> str:
    if outcome == "timeout":
        return f"> {TIMEOUT_S} s (statement timeout)"
    return f"{ms(seconds):,.1f} ms ({outcome})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="a checkout of the previous code")
    parser.add_argument("--reps", type=int, default=5, help="medians of this many runs")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args()
    columns = {"new": measure(False, apply_here, args.reps)}
    if args.baseline:
        columns["old"] = measure(True, apply_in(args.baseline), 1)
    table = Table(title="dependency guard and pipeline apply")
    table.add_column("row")
    for name in columns:
        table.add_column(name, justify="right")
    for row in columns["new"]:
        table.add_row(row, *(column.get(row, "-") for column in columns.values()))
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(columns, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
