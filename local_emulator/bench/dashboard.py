"""The dashboard's page of a 1,000-task batch, measured in Chromium:
``python -m local_emulator.bench.dashboard [--runs 5]``.

A throwaway database holds a pipeline of 1,000 tasks (``extract`` feeding 9 stages of 111
parallel parts, ``stage3_part_042`` and so on) and one finished batch of it whose rows carry a
mix of states (written with SQL: the page reads rows, it does not care how they were made).
The status function runs under functions-framework; headless Chromium (the system's, through
Playwright) opens the batch page with an empty cache each run and reports:

- page weight: bytes transferred (HTML, stylesheet, scripts: gzipped as served) and decoded;
- render time: navigation start to the graph's layout done (the ``dagrelay-layout-done``
  performance mark of the page's script), the median of the runs;
- the same layout with every task drawn (no groups), for comparison.
Nothing is asserted; the numbers are printed and written as JSON.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import create_engine, text

from dagrelay.local import processes
from local_emulator.bench.db import throwaway_database

PIPELINE = "bench_dashboard"
BATCH = "2024-03"
STAGES = 9
PARTS = 111  # 1 + 9 * 111 = 1,000 tasks
LAYOUT_TIMEOUT_MS = 120_000

PIPELINE_SQL = [
    """INSERT INTO tasks (name, pipeline, handler)
       SELECT 'extract', :p, 'python.noop'
       UNION ALL
       SELECT format('stage%s_part_%s', s, lpad(i::text, 3, '0')), :p, 'python.noop'
       FROM generate_series(1, :stages) s, generate_series(1, :parts) i""",
    """INSERT INTO task_dependencies (child_task_id, parent_task_id)
       SELECT c.task_id, p.task_id FROM tasks c JOIN tasks p ON p.pipeline = c.pipeline
       WHERE c.pipeline = :p AND (
           (c.name LIKE 'stage1\\_%' AND p.name = 'extract')
           OR (c.name ~ '^stage[0-9]+_part_' AND p.name = format('stage%s_part_%s',
               split_part(substr(c.name, 6), '_', 1)::int - 1, split_part(c.name, '_', 3))))""",
    """INSERT INTO batches (pipeline, batch_id, status, triggered_by, created_at, finished_at,
                            version_id)
       VALUES (:p, :b, 'FAILED', 'bench', now() - interval '10 minutes', now(),
               dagrelay_pipeline_version(:p, now()))""",
    # stage 5 part 7 fails: its chain below is taken down; everything else succeeds
    """INSERT INTO task_log (pipeline, batch_id, task_id, status, attempt, started_at,
                             finished_at, error)
       SELECT :p, :b, t.task_id,
              CAST(CASE WHEN t.name = 'stage5_part_007' THEN 'ERROR'
                        WHEN t.name ~ '^stage[6-9]_part_007$' THEN 'UPSTREAM_FAILED'
                        ELSE 'SUCCESS' END AS task_status),
              CASE WHEN t.name ~ '^stage[6-9]_part_007$' THEN 0 ELSE 1 END,
              now() - interval '9 minutes', now() - interval '1 minute',
              CASE WHEN t.name = 'stage5_part_007' THEN 'disk full' END
       FROM tasks t WHERE t.pipeline = :p""",
]


def seed(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            values = {"p": PIPELINE, "b": BATCH, "stages": STAGES, "parts": PARTS}
            for statement in PIPELINE_SQL:
                conn.execute(text(statement), values)
            return int(
                conn.execute(
                    text("SELECT count(*) FROM tasks WHERE pipeline = :p"), {"p": PIPELINE}
                ).scalar_one()
            )
    finally:
        engine.dispose()


MEASURE_JS = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const resources = performance.getEntriesByType('resource');
  const mark = performance.getEntriesByName('dagrelay-layout-done')[0];
  const sum = (key) => nav[key] + resources.reduce((n, r) => n + r[key], 0);
  return {render_ms: mark.startTime - nav.startTime, transferred: sum('transferSize'),
          decoded: sum('decodedBodySize'), html_decoded: nav.decodedBodySize,
          requests: 1 + resources.length,
          boxes: +document.getElementById('graph').dataset.boxes};
}"""


def measure_page(url: str, runs: int, shots: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - optional, bench only

    from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: PLC0415 - the tests' browser

    samples: list[dict[str, Any]] = []
    expanded: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for _ in range(runs):
                context = browser.new_context(viewport={"width": 1360, "height": 900})
                page = context.new_page()
                page.goto(url)
                page.wait_for_selector('#graph[data-layout="done"]', timeout=LAYOUT_TIMEOUT_MS)
                samples.append(page.evaluate(MEASURE_JS))
                if len(samples) == 1:
                    page.screenshot(path=str(shots / "bench-dashboard-1000.png"), full_page=True)
                page.select_option("#graph-mode", "none")
                page.wait_for_selector(
                    '#graph[data-layout="done"][data-boxes="1000"]', timeout=LAYOUT_TIMEOUT_MS
                )
                expanded.append(float(page.locator("#graph").get_attribute("data-layout-ms") or 0))
                if len(expanded) == 1:
                    page.screenshot(path=str(shots / "bench-dashboard-1000-expanded.png"))
                context.close()
        finally:
            browser.close()
    first = samples[0]
    return {
        "tasks": 1000,
        "runs": runs,
        "boxes_drawn": first["boxes"],
        "requests": first["requests"],
        "page_bytes_transferred": first["transferred"],
        "page_bytes_decoded": first["decoded"],
        "html_bytes": first["html_decoded"],
        "render_ms_median": round(statistics.median(s["render_ms"] for s in samples), 1),
        "render_ms_samples": [round(s["render_ms"], 1) for s in samples],
        "expanded_layout_ms_median": round(statistics.median(expanded), 1),
    }


def run(runs: int, out: Path | None) -> dict[str, Any]:
    with throwaway_database("dash") as url, tempfile.TemporaryDirectory() as workdir:
        tasks = seed(url)
        if tasks != 1000:
            raise RuntimeError(f"the pipeline has {tasks} tasks, not 1000")
        env = {**os.environ, "DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
        port = processes.free_port()
        status = processes.start_router(port, env, Path(workdir), target="status")
        try:
            page_url = f"http://127.0.0.1:{port}/batches/{PIPELINE}/{BATCH}"
            result = measure_page(page_url, runs, out.parent if out else Path(workdir))
        finally:
            status.stop()
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def main(
    runs: Annotated[int, typer.Option("--runs", min=1, help="Page loads, empty cache each.")] = 5,
    out: Annotated[Path, typer.Option("--out")] = Path("test-artifacts/bench-dashboard.json"),
) -> None:
    """Page weight and render time of a 1,000-task batch page."""
    out.parent.mkdir(parents=True, exist_ok=True)
    result = run(runs, out)
    for key, value in result.items():
        typer.echo(f"{key:28} {value}")


if __name__ == "__main__":
    typer.run(main)
