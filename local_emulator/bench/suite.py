"""The benchmark suite: ``python -m local_emulator bench [--quick] [--out bench-results.json]``
(or ``python -m local_emulator.bench``, ``make bench``).

Six benchmarks, each on a throwaway database of its own, everything it starts stopped:
1. hop latency of a chain on the local stack (push, sweep off), with the floor measured in the
   same run: emulator publish -> push to a trivial receiver, and one PostgreSQL round trip;
2. engine throughput without transport (InMemoryPublisher), 1 and 4 worker processes, and 4
   with every claim through a pool (its row lock in the path, slots = workers);
3. fan-in / fan-out cost of one completion, 10..10,000 parents/children, against a naive loop;
4. wall time of a 1,000-task wide batch on the local stack with 4 pull workers;
5. the dependency guard's cycle check (20 stacked diamonds, 5,000-task pipelines) and
   ``pipeline apply`` of 5,000 tasks (first, no-op, one task changed) — ``bench.guard``;
6. ingestion's peak memory (validate + Parquet) at 5, 50 and 500 MB files — ``bench.ingest``;
7. the dashboard's page of a 1,000-task batch in Chromium: weight and render time —
   ``bench.dashboard`` (runnable alone: ``python -m local_emulator.bench.dashboard``);
8. a mapped task over 1,000 and 10,000 items: statements and ms of the completion creating the
   instances, wall time of 4 in-process workers running them (InMemoryPublisher) —
   ``bench.maps`` (runnable alone: ``python -m local_emulator.bench.maps``);
9. the ``dagrelay`` command's answer time in fresh processes (--help, the read verbs, trigger)
   against bare Python — ``bench.cli`` (runnable alone: ``python -m local_emulator.bench.cli``).
10. a pipeline test with ``dagrelay.testing`` as a user's pytest runs it: per test, a 7-task and
   a 3-task pipeline with a 30-item map in duplicate mode; the scaffold's suite from a cold
   start -- ``bench.testing`` (runnable alone: ``python -m local_emulator.bench.testing``).
Medians and ratios are all measured in the same run; the targets are printed with pass/fail.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

from dagrelay.local.processes import StackError
from local_emulator.bench import cli, dashboard, engine, fan, guard, ingest, maps, stack, testing
from local_emulator.bench.db import median, ms, percentile, throwaway_database

T = TypeVar("T")
FAN_SIZES = (10, 100, 1000, 10000)
POOL_SLOTS = 4  # = the workers: every claim takes the pool's lock, none ever waits


@dataclass(frozen=True)
class Sizes:
    chain: int = 50
    floor_samples: int = 50
    pg_samples: int = 200
    throughput_tasks: int = 2000
    fan_reps: int = 5
    naive_reps: int = 3
    wide_tasks: int = 1000
    guard_reps: int = 3
    ingest_mb: tuple[int, ...] = (5, 50, 500)
    cli_runs: int = 7
    testing_tests: int = testing.TESTS
    testing_cold_runs: int = testing.COLD_RUNS


QUICK = Sizes(
    chain=25,
    floor_samples=25,
    pg_samples=100,
    throughput_tasks=1000,
    fan_reps=2,
    naive_reps=1,
    guard_reps=1,
    ingest_mb=(5, 50),
    cli_runs=3,
    testing_tests=4,
    testing_cold_runs=2,
)


def run(console: Console, *, quick: bool, out: str | Path) -> bool:
    """Run every benchmark, print the table, write ``out``. False if a benchmark failed."""
    sizes = QUICK if quick else Sizes()
    started = time.monotonic()
    try:
        results = measure(console, sizes)
    except StackError as exc:  # BenchError included: a benchmark did not do what it measures
        console.print(f"[red]benchmark failed: {exc}")
        return False
    results["meta"] = {
        "quick": quick,
        "sizes": sizes.__dict__,
        "cpus": os.cpu_count(),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 1),
    }
    results["targets"] = targets(results)
    Path(out).write_text(json.dumps(results, indent=2) + "\n")
    console.print(table(results))
    console.print(f"written to {out} in {results['meta']['duration_s']}s")
    return True


def step(console: Console, what: str, work: Callable[[], T]) -> T:
    started = time.monotonic()
    with console.status(what):
        result = work()
    console.print(f"{what}: {time.monotonic() - started:.1f}s")
    return result


def measure(console: Console, sizes: Sizes) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with throwaway_database("hop") as url:
        hop = step(
            console,
            f"1. hop latency ({sizes.chain}-task chain) and its floor",
            lambda: stack.hop_latency(url, sizes.chain, sizes.floor_samples, sizes.pg_samples),
        )
    results |= hop_results(hop)
    with throwaway_database("throughput") as url:
        for workers in (1, 4):
            results[f"completions_per_s_{workers}w"] = round(
                step(
                    console,
                    f"2. throughput, {workers} worker(s), {sizes.throughput_tasks} tasks",
                    partial(engine.throughput, url, sizes.throughput_tasks, workers),
                ),
                1,
            )
        results[f"completions_per_s_4w_pool_{POOL_SLOTS}"] = round(
            step(
                console,
                f"2b. throughput, 4 workers, every claim through a pool of {POOL_SLOTS} slots",
                lambda: engine.throughput(url, sizes.throughput_tasks, 4, POOL_SLOTS),
            ),
            1,
        )
    with throwaway_database("fan") as url:
        costs = step(
            console,
            "3. fan-in / fan-out, 10..10,000",
            lambda: fan.scaling(url, FAN_SIZES, sizes.fan_reps, sizes.naive_reps),
        )
    results |= fan_results(costs)
    with throwaway_database("map") as url:
        results["map_items"] = step(
            console, "8. map over 1,000 and 10,000 items, 4 workers", lambda: maps.measure(url)
        )
    with throwaway_database("wide") as url:
        wall, inserted = step(
            console,
            f"4. wide batch, {sizes.wide_tasks} tasks, 4 pull workers",
            lambda: stack.wide_batch(url, sizes.wide_tasks, 4, 240),
        )
    results[f"wide_batch_{sizes.wide_tasks}_seconds"] = round(wall, 3)
    results["wide_pipeline_insert_seconds"] = round(inserted, 3)  # 1,996 edges, guard on
    results["guard_and_apply"] = step(
        console,
        "5. cycle guard and pipeline apply",
        lambda: guard.measure(False, guard.apply_here, sizes.guard_reps),
    )
    results["ingest_peak_memory"] = step(
        console,
        f"6. ingestion peak memory at {', '.join(map(str, sizes.ingest_mb))} MB",
        lambda: ingest.peaks(list(sizes.ingest_mb)),
    )
    results["testing"] = step(
        console,
        "10. dagrelay.testing: pipeline tests and the scaffold's suite, as pytest runs them",
        lambda: testing.measure(sizes.testing_tests, sizes.testing_cold_runs),
    )
    results["dashboard_1000_tasks"] = step(
        console, "7. dashboard: a 1,000-task batch page in Chromium", lambda: dashboard.run(3, None)
    )
    results["cli"] = step(
        console,
        f"9. the dagrelay command in fresh processes, {sizes.cli_runs} runs each",
        lambda: cli.measure(sizes.cli_runs),
    )
    return results


def hop_results(hop: dict[str, list[float]]) -> dict[str, Any]:
    hop_median = median(hop["hops_s"])
    push_median = median(hop["push_s"])
    return {
        "hop_median_ms": ms(hop_median),
        "hop_p90_ms": ms(percentile(hop["hops_s"], 90)),
        "floor_push_median_ms": ms(push_median),
        "floor_pg_roundtrip_ms": ms(median(hop["pg_s"])),
        "engine_overhead_median_ms": ms(hop_median - push_median),
        # Extra: the transport floor's spread, and claim -> finish inside each task (handler,
        # finish_attempt, advance_children), which the push loop's ~100 ms tick can hide.
        "floor_push_p90_ms": ms(percentile(hop["push_s"], 90)),
        "task_claim_to_finish_median_ms": ms(median(hop["in_engine_s"])),
        "hop_samples": len(hop["hops_s"]),
    }


def fan_results(costs: dict[str, dict[int, fan.Cost]]) -> dict[str, Any]:
    def by_size(kind: str, field: str) -> dict[str, Any]:
        return {
            str(size): round(getattr(cost, field), 6) if field == "seconds" else cost.statements
            for size, cost in costs[kind].items()
        }

    ours, naive = costs["fanin"][1000].seconds, costs["naive"][1000].seconds
    return {
        "statements_per_completion": by_size("fanin", "statements"),
        "fanin_seconds": by_size("fanin", "seconds"),
        "naive_fanin_seconds": by_size("naive", "seconds"),
        "naive_statements_per_completion": by_size("naive", "statements"),
        "naive_over_ours_1000": round(naive / ours, 1),
        "fanout_seconds": by_size("fanout", "seconds"),
        "fanout_statements": by_size("fanout", "statements"),
    }


def targets(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    statements = list(r["statements_per_completion"].values())
    testing_targets: dict[str, dict[str, Any]] = r.get("testing", {}).get("targets", {})
    return testing_targets | {
        "engine_overhead": {
            "target": "engine overhead <= 10 ms median per hop",
            "value": r["engine_overhead_median_ms"],
            "pass": r["engine_overhead_median_ms"] <= 10,
        },
        "throughput_4w": {
            "target": ">= 300 completions/s with 4 workers",
            "value": r["completions_per_s_4w"],
            "pass": r["completions_per_s_4w"] >= 300,
        },
        "constant_statements": {
            "target": "statements per completion constant (<= 6) from 10 to 10,000 parents",
            "value": statements,
            "pass": len(set(statements)) == 1 and max(statements) <= 6,
        },
        "naive_over_ours": {
            "target": "naive / ours at 1,000 parents >= 20",
            "value": r["naive_over_ours_1000"],
            "pass": r["naive_over_ours_1000"] >= 20,
        },
        "cli": {
            "target": "dagrelay over bare Python: --help <= 0.25 s, read verbs <= 0.6 s, "
            "trigger <= 1.0 s (medians)",
            "value": _cli_misses(r["cli"]),
            "pass": all(c["pass"] for c in r["cli"]["commands"].values()),
        },
    }


def _cli_misses(result: dict[str, Any]) -> str:
    commands = result["commands"]
    missed = [f"{name} +{c['delta_s']:.2f} s" for name, c in commands.items() if not c["pass"]]
    return "; ".join(missed) or f"all {len(commands)} within target"


def table(r: dict[str, Any]) -> Table:
    t = Table(title="dagrelay benchmark" + (" (quick)" if r["meta"]["quick"] else ""))
    t.add_column("measure")
    t.add_column("value", justify="right")
    rows = [
        ("hop latency median / p90", f"{r['hop_median_ms']:.1f} / {r['hop_p90_ms']:.1f} ms"),
        ("floor: publish -> push median", f"{r['floor_push_median_ms']:.1f} ms"),
        ("floor: PostgreSQL round trip", f"{r['floor_pg_roundtrip_ms']:.3f} ms"),
        ("engine overhead per hop (median)", f"{r['engine_overhead_median_ms']:.1f} ms"),
        ("task claim -> finish (median)", f"{r['task_claim_to_finish_median_ms']:.1f} ms"),
        ("completions/s, 1 worker", f"{r['completions_per_s_1w']:.0f}"),
        ("completions/s, 4 workers", f"{r['completions_per_s_4w']:.0f}"),
        (
            f"completions/s, 4 workers, claims through a pool of {POOL_SLOTS}",
            f"{r[f'completions_per_s_4w_pool_{POOL_SLOTS}']:.0f}",
        ),
    ]
    rows += [
        (f"fan-in {size} parents: ours / naive", _fanin_cell(r, size))
        for size in r["fanin_seconds"]
    ]
    rows.append(("naive / ours at 1,000 parents", f"{r['naive_over_ours_1000']:.1f}x"))
    rows += [
        (f"fan-out {size} children", f"{sec * 1000:.1f} ms, {r['fanout_statements'][size]} stmts")
        for size, sec in r["fanout_seconds"].items()
    ]
    rows += [
        (
            f"map over {size} items (4 workers, in-process)",
            (
                f"create {m['create_ms']:.0f} ms, {m['create_statements']} stmts; "
                f"run {m['run_4_workers_s']:.1f} s"
            ),
        )
        for size, m in r.get("map_items", {}).items()
    ]
    wide = next(k for k in r if k.startswith("wide_batch_"))
    rows.append((f"wide batch ({wide.split('_')[2]} tasks, 4 workers)", f"{r[wide]:.2f} s"))
    rows += list(r.get("guard_and_apply", {}).items())
    rows += [
        (f"ingestion peak RSS, {p['file_mb']} MB file", f"{p['peak_mb']} MB ({p['seconds']} s)")
        for p in r.get("ingest_peak_memory", [])
    ]
    if tested := r.get("testing"):
        rows += [
            (
                f"dagrelay.testing: {label}, per test after the first / first",
                f"{m['median_after_first_s']:.2f} s / {m['first_s']:.2f} s",
            )
            for label, m in (
                ("7 tasks, 30-item map, duplicate", tested["seven_task_map30_duplicate"]),
                ("3 tasks, 30-item map, duplicate", tested["three_task_map30_duplicate"]),
            )
        ]
        rows.append(
            (
                "the scaffold's suite from a cold start (median)",
                f"{tested['scaffold_suite_cold']['wall_median_s']:.1f} s",
            )
        )
    if page := r.get("dashboard_1000_tasks"):
        rows.append(
            (
                "dashboard 1,000-task batch page",
                (
                    f"{page['render_ms_median']:.0f} ms to layout done, "
                    f"{page['page_bytes_transferred'] / 1024:.0f} KiB transferred"
                ),
            )
        )
    if found := r.get("cli"):
        worst = max(found["commands"].items(), key=lambda item: item[1]["delta_s"])
        rows.append(
            (
                "dagrelay command, fresh process (slowest over bare Python)",
                f"{worst[0]}: +{worst[1]['delta_s']:.2f} s (baseline {found['baseline_s']:.2f} s)",
            )
        )
    for name, value in rows:
        t.add_row(name, value)
    for check in r["targets"].values():
        verdict = "[green]PASS" if check["pass"] else "[red]FAIL"
        t.add_row(f"target: {check['target']}", f"{verdict}[/] ({check['value']})")
    return t


def _fanin_cell(r: dict[str, Any], size: str) -> str:
    ours = f"{r['fanin_seconds'][size] * 1000:.1f} ms, {r['statements_per_completion'][size]} stmts"
    naive = (
        f"{r['naive_fanin_seconds'][size] * 1000:.1f} ms, "
        f"{r['naive_statements_per_completion'][size]} stmts"
    )
    return f"{ours} / {naive}"
