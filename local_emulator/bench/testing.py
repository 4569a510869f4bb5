"""How long a pipeline test with ``dagrelay.testing`` takes, as a user's pytest sees it.

Each measure is a fresh ``python -m pytest`` process (the ``dagrelay_runner`` fixture of the
installed plugin), its per-test times (setup + call + teardown) read from its JUnit XML:
(a) a 7-task pipeline whose middle task maps no-op handlers over 30 items, in duplicate mode,
    shuffled; (b) a 3-task pipeline src -> map over 30 items -> join, in duplicate mode;
the median of the tests after the first, and the first (which pays what a session sets up).
(c) the scaffold's own suite: ``dagrelay init`` into a temporary directory, then its tests run
by pytest in a subprocess from a cold start (wall time of the process), the median of a few.

Targets (issue 19): (a) and the scaffold's batch tests <= 2 s per test after the first, (c) <= 10 s.
Runnable alone: ``python -m local_emulator.bench.testing [--tests N] [--cold-runs R]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from local_emulator.bench.db import median, server_url

TESTS = 6  # per pipeline and session: the first, then 5 measured
COLD_RUNS = 3
TARGET_PER_TEST_S = 2.0
TARGET_SCAFFOLD_S = 10.0
ADMIN_ENV = "DAGRELAY_TEST_ADMIN_URL"
# Plugins of our dev environment that a team's project (dagrelay[testing]: pytest) does not
# have: bqemulator's needs testcontainers; hypothesis's imports hypothesis at the session's end.
NOT_OURS = ["-p", "no:bqemulator", "-p", "no:hypothesispytest", "-p", "no:anyio"]

PIPELINES = '''
from __future__ import annotations

from typing import Any

import pytest

from dagrelay.handlers.registry import HandlerContext
from dagrelay.pipelines.api import Pipeline

ITEMS = 30


def seven() -> Pipeline:
    """extract -> prepare -> each (30 items) -> join -> score -> report, publish."""
    p = Pipeline("bench_seven")
    extract = p.noop("extract", output={"items": list(range(ITEMS))})
    prepare = p.noop("prepare", parents=[extract], output={"items": list(range(ITEMS))})

    @p.task("each", parents=[prepare], map={"over": "prepare.items"})
    def each(ctx: HandlerContext) -> dict[str, Any]:
        return {"item": ctx.item}

    join = p.noop("join", parents=[each])
    score = p.noop("score", parents=[join])
    p.noop("report", parents=[score])
    p.noop("publish", parents=[score])
    return p


def three() -> Pipeline:
    """src -> each (30 items) -> join."""
    p = Pipeline("bench_three")
    src = p.noop("src", output={"items": list(range(ITEMS))})

    @p.task("each", parents=[src], map={"over": "src.items"})
    def each(ctx: HandlerContext) -> dict[str, Any]:
        return {"item": ctx.item}

    p.noop("join", parents=[each])
    return p


PIPELINE = {"seven": seven, "three": three}


@pytest.mark.parametrize("n", range(int(__import__("os").environ["BENCH_TESTS"])))
def test_batch(dagrelay_runner: Any, n: int) -> None:
    kind = __import__("os").environ["BENCH_PIPELINE"]
    result = dagrelay_runner.run(PIPELINE[kind](), f"b{n}", duplicate=True, shuffle=True, seed=n)
    assert result.status == "SUCCESS", result.tasks
    assert len(result["each"].items) == ITEMS
'''


def _pytest(cwd: Path, env: dict[str, str], *args: str) -> tuple[float, list[tuple[str, float]]]:
    """Run pytest in ``cwd``; its wall time and each test's (name, seconds), in run order."""
    junit = cwd / "junit.xml"
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            *("-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"),
            *NOT_OURS,
            *args,
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"pytest failed in {cwd}:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    cases = ET.parse(junit).getroot().iter("testcase")  # noqa: S314 - our own file
    return wall, [(c.get("name", "?"), float(c.get("time", "nan"))) for c in cases]


def _env(pycache: Path, **extra: str) -> dict[str, str]:
    """The environment of a measured pytest: bytecode (and pytest's rewritten test modules)
    cached under ``pycache``, as Python does on a user's machine, without writing into the
    checkout or the venv; the first process of a bench run compiles everything."""
    env = dict(os.environ)
    env.setdefault(ADMIN_ENV, _admin_url())
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env | {"PYTHONPYCACHEPREFIX": str(pycache)} | extra


def _admin_url() -> str:
    from sqlalchemy import make_url  # noqa: PLC0415 - only when measuring

    url = make_url(server_url()).set(database="postgres")
    return url.render_as_string(hide_password=False)


def _summary(wall: float, times: list[tuple[str, float]]) -> dict[str, Any]:
    seconds = [t for _, t in times]
    return {
        "tests": len(seconds),
        "first_s": round(seconds[0], 3),
        "median_after_first_s": round(median(seconds[1:]), 3) if len(seconds) > 1 else None,
        "max_after_first_s": round(max(seconds[1:]), 3) if len(seconds) > 1 else None,
        "session_wall_s": round(wall, 3),
    }


def pipeline_tests(kind: str, tests: int, pycache: Path) -> dict[str, Any]:
    """One pytest session of ``tests`` batches of the pipeline ``kind`` (seven or three)."""
    with tempfile.TemporaryDirectory(prefix="dagrelay_bench_testing_") as tmp:
        root = Path(tmp)
        (root / "test_bench.py").write_text(PIPELINES)
        (root / "pytest.ini").write_text("[pytest]\naddopts = --strict-markers\n")
        env = _env(pycache, BENCH_TESTS=str(tests), BENCH_PIPELINE=kind)
        wall, times = _pytest(root, env)
    return _summary(wall, times)


def scaffold_cold(runs: int, pycache: Path) -> dict[str, Any]:
    """``dagrelay init`` once, then its suite in fresh pytest processes: the first with no
    bytecode cached yet (it compiles dagrelay, and pytest rewrites its asserts), then ``runs``
    more, as a user's every later run."""
    walls: list[float] = []
    per_test: list[list[tuple[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="dagrelay_bench_scaffold_") as tmp:
        project = Path(tmp) / "benchproj"
        subprocess.run(
            [str(Path(sys.executable).with_name("dagrelay")), "init", str(project)],
            check=True,
            capture_output=True,
        )
        for _ in range(runs + 1):
            wall, times = _pytest(project, _env(pycache))
            walls.append(wall)
            per_test.append(times)
    return {
        "runs": runs,
        "tests": len(per_test[0]),
        "first_run_no_bytecode_s": round(walls[0], 3),
        "wall_median_s": round(median(walls[1:]), 3),
        "wall_max_s": round(max(walls[1:]), 3),
        "walls_s": [round(w, 3) for w in walls[1:]],
        "per_test_s": {name: round(t, 3) for name, t in per_test[-1]},
    }


def measure(tests: int = TESTS, cold_runs: int = COLD_RUNS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dagrelay_bench_pycache_") as pycache:
        scaffold = scaffold_cold(cold_runs, Path(pycache))
        seven = pipeline_tests("seven", tests, Path(pycache))
        three = pipeline_tests("three", tests, Path(pycache))
    return {
        "seven_task_map30_duplicate": seven,
        "three_task_map30_duplicate": three,
        "scaffold_suite_cold": scaffold,
        "targets": {
            "seven_per_test": {
                "target": f"7-task/30-item map, duplicate: <= {TARGET_PER_TEST_S} s per test "
                "after the first",
                "value": seven["median_after_first_s"],
                "pass": seven["median_after_first_s"] <= TARGET_PER_TEST_S,
            },
            "scaffold_cold": {
                "target": f"scaffold's suite from a cold start <= {TARGET_SCAFFOLD_S} s",
                "value": scaffold["wall_median_s"],
                "pass": scaffold["wall_median_s"] <= TARGET_SCAFFOLD_S,
            },
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=TESTS, help="tests per pipeline session")
    parser.add_argument("--cold-runs", type=int, default=COLD_RUNS, help="scaffold suite runs")
    args = parser.parse_args(argv)
    results = measure(args.tests, args.cold_runs)
    sys.stdout.write(json.dumps(results, indent=2) + "\n")
    return 0 if all(t["pass"] for t in results["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
