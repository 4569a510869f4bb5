"""The dashboard in a real browser, on the local stack: a batch fails through Pub/Sub, and its
page in headless Chromium shows the failed task as the root cause, its descendants taken down,
in distinct colours, without a single request leaving 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from local_emulator.stack import Stack, StackInfo
from tests.conftest import ARTIFACTS
from tests.e2e.browser import chromium, outside, require_chromium
from tests.e2e.sql_pipelines import insert_with_sql

pytestmark = pytest.mark.e2e

PIPELINE = "e2e_dashboard"
SCREENSHOT = ARTIFACTS / "dashboard.png"


def test_batch_page_shows_root_cause_and_taken_down_tasks(
    stack: tuple[Stack, StackInfo],
    stack_db: Engine,
    publish: Callable[..., str],
    wait_batch: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    require_chromium()
    noop = ("python.noop", "{}")
    insert_with_sql(
        stack_db,
        PIPELINE,
        {
            "dash_extract": noop,
            "dash_transform": (
                "python.fail",
                '{"message": "<b>disk</b> on fire", "retryable": false}',
            ),
            "dash_audit": noop,
            "dash_load": noop,
            "dash_report": noop,
        },
        [
            ("dash_extract", "dash_transform"),
            ("dash_extract", "dash_audit"),
            ("dash_transform", "dash_load"),
            ("dash_audit", "dash_load"),
            ("dash_load", "dash_report"),
        ],
    )
    publish({"action": "start_batch", "pipeline": PIPELINE, "batch_id": "2024-03"})
    assert wait_batch(PIPELINE, "2024-03")["status"] == "FAILED"

    requests: list[str] = []
    with chromium(tmp_path / "profile") as browser:
        page = browser.new_page()
        page.on("request", lambda request: requests.append(request.url))
        response = page.goto(f"{stack[1].status_url}/batches/{PIPELINE}/2024-03")
        assert response is not None
        assert response.status == 200

        def node(task: str) -> Any:
            return page.locator(f'svg.dag g.node[data-task="{task}"]')

        def fill(task: str) -> str:
            return str(node(task).locator("rect.box").evaluate("e => getComputedStyle(e).fill"))

        failed = node("dash_transform")
        assert failed.get_attribute("data-status") == "ERROR"
        assert "root-cause" in (failed.get_attribute("class") or "").split()
        assert "root cause" in (failed.locator("text.state").text_content() or "")
        for task in ("dash_load", "dash_report"):
            assert node(task).get_attribute("data-status") == "UPSTREAM_FAILED"
            assert "root-cause" not in (node(task).get_attribute("class") or "")
        for task in ("dash_extract", "dash_audit"):
            assert node(task).get_attribute("data-status") == "SUCCESS"
        colours = {fill("dash_transform"), fill("dash_load"), fill("dash_extract")}
        assert len(colours) == 3, colours
        assert fill("dash_report") == fill("dash_load")

        explanation = page.locator('[data-root-cause="dash_transform"]')
        assert "It took down 2: dash_load, dash_report." in explanation.inner_text()
        assert "<b>disk</b> on fire" in explanation.inner_text()  # shown as text, not markup
        assert page.locator("pre.error b").count() == 0

        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        page.goto(f"{stack[1].status_url}/?pipeline={PIPELINE}")
        page.screenshot(path=str(ARTIFACTS / "dashboard-batches.png"), full_page=True)
        page.goto(f"{stack[1].status_url}/pipelines/{PIPELINE}")
        page.screenshot(path=str(ARTIFACTS / "dashboard-pipeline.png"), full_page=True)

    assert requests, "the page made no request at all?"
    assert outside(requests) == []
