"""The dashboard in a real browser (Debian's Chromium through Playwright), on the local stack:
every page, every operator action, the live refresh of a running batch, and the graph's
geometry as drawn by ELK — without a single request leaving 127.0.0.1. Screenshots land in
test-artifacts/dashboard-<page>.png."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import pytest
from google.cloud import pubsub_v1
from sqlalchemy import Engine, text

from dagrelay.local.processes import wait_for
from dagrelay.local.stack import Stack, StackInfo
from tests.e2e.browser import chromium, outside, require_chromium
from tests.e2e.dashboard_browser import crossings, geometry, open_page, shot
from tests.e2e.sql_pipelines import insert_with_sql

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

pytestmark = pytest.mark.e2e

NOOP = ("python.noop", "{}")
PIPELINE = "e2e_dashboard"
ORDERS = "e2e_orders"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    require_chromium()
    with chromium(tmp_path_factory.mktemp("chromium") / "profile") as context:
        yield context


@pytest.fixture(scope="module", autouse=True)
def dashboards(stack: tuple[Stack, StackInfo]) -> StackInfo:
    """The session's stack serves the router only; this module opens both dashboards."""
    return stack[0].serve("status", "operate")


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    """A tab that records every URL it requests; none may leave 127.0.0.1."""
    tab = browser.new_page()
    requests: list[str] = []
    tab.on("request", lambda request: requests.append(request.url))
    yield tab
    tab.close()
    assert requests, "the page made no request at all?"
    assert outside(requests) == []


@pytest.fixture(scope="module")
def failed_batch(
    stack: tuple[Stack, StackInfo],
    stack_db: Engine,
    publish: Callable[..., str],
    wait_batch: Callable[..., dict[str, Any]],
) -> str:
    """e2e_dashboard/2024-03 FAILED: dash_transform failed, dash_load and dash_report taken
    down."""
    insert_with_sql(
        stack_db,
        PIPELINE,
        {
            "dash_extract": NOOP,
            "dash_transform": (
                "python.fail",
                '{"message": "<b>disk</b> on fire", "retryable": false}',
            ),
            "dash_audit": ("python.noop", '{"output": {"rows": 10, "month": "{month}"}}'),
            "dash_load": NOOP,
            "dash_report": NOOP,
        },
        [
            ("dash_extract", "dash_transform"),
            ("dash_extract", "dash_audit"),
            ("dash_transform", "dash_load"),
            ("dash_audit", "dash_load"),
            ("dash_load", "dash_report"),
        ],
    )
    publish(
        {
            "action": "start_batch",
            "pipeline": PIPELINE,
            "batch_id": "2024-03",
            "params": {"month": "2024-03"},
        }
    )
    assert wait_batch(PIPELINE, "2024-03")["status"] == "FAILED"
    return f"{stack[1].url('status')}/batches/{PIPELINE}/2024-03"


def node(page: Page, task: str) -> Any:
    return page.locator(f'svg.dag g.node[data-task="{task}"]')


def fill(page: Page, task: str) -> str:
    return str(node(page, task).locator("rect.box").evaluate("e => getComputedStyle(e).fill"))


# -- pages ----------------------------------------------------------------------------------------


def test_batch_page_shows_root_cause_and_taken_down_tasks(failed_batch: str, page: Page) -> None:
    open_page(page, failed_batch, graph=True)
    failed = node(page, "dash_transform")
    assert failed.get_attribute("data-status") == "ERROR"
    assert "root-cause" in (failed.get_attribute("class") or "").split()
    assert "root cause" in (failed.locator("text.state").text_content() or "")
    for task in ("dash_load", "dash_report"):
        assert node(page, task).get_attribute("data-status") == "UPSTREAM_FAILED"
        assert "root-cause" not in (node(page, task).get_attribute("class") or "")
    for task in ("dash_extract", "dash_audit"):
        assert node(page, task).get_attribute("data-status") == "SUCCESS"
    colours = {fill(page, "dash_transform"), fill(page, "dash_load"), fill(page, "dash_extract")}
    assert len(colours) == 3, colours
    assert fill(page, "dash_report") == fill(page, "dash_load")
    assert crossings(geometry(page)) == []

    explanation = page.locator('[data-root-cause="dash_transform"]')
    assert "It took down 2: dash_load, dash_report." in explanation.inner_text()
    assert "<b>disk</b> on fire" in explanation.inner_text()  # shown as text, not markup
    assert page.locator("pre.error b").count() == 0
    assert page.locator("form.action").count() == 0  # the viewers' function has no actions
    shot(page, "batch")

    node(page, "dash_transform").click()  # a box links to its task's page
    page.wait_for_url("**/tasks/dash_transform")
    shot(page, "task-failed")


def test_task_page_shows_params_output_and_attempts(failed_batch: str, page: Page) -> None:
    open_page(page, f"{failed_batch}/tasks/dash_audit")
    text_of = page.locator("main").inner_text()
    assert '"month": "{month}"' in text_of  # as defined
    assert '"month": "2024-03"' in text_of  # resolved for the batch, and in the output
    assert '"rows": 10' in text_of
    row = page.locator("table tbody tr").first.inner_text()
    for shown in ("run 1", "attempt 1", "SUCCESS"):
        assert shown in row
    shot(page, "task")


def test_gantt_grid_and_batches_pages(
    failed_batch: str, page: Page, stack: tuple[Stack, StackInfo]
) -> None:
    open_page(page, f"{failed_batch}/gantt")
    bars = page.locator("svg.gantt g.attempt")
    assert bars.count() == 3  # extract, transform, audit ran; load and report never did
    assert page.locator('svg.gantt g.attempt[data-task="dash_transform"]').count() == 1
    shot(page, "gantt")

    open_page(page, f"{stack[1].url('status')}/pipelines/{PIPELINE}", graph=True)
    cells = page.locator("table.grid a.cell")
    assert cells.count() == 5
    assert page.locator('table.grid a.cell.status-ERROR[href$="/tasks/dash_transform"]').count()
    assert node(page, "dash_load").get_attribute("data-status") == "none"
    shot(page, "pipeline")

    open_page(page, f"{stack[1].url('status')}/?pipeline={PIPELINE}")
    assert page.locator("td .pill.status-FAILED").count() == 1
    shot(page, "batches")


def test_rejected_and_dead_letter_pages(
    page: Page, stack: tuple[Stack, StackInfo], stack_db: Engine, publish: Callable[..., str]
) -> None:
    info = stack[1]
    publish({"action": "start_batch", "pipeline": "<i>etll</i>", "batch_id": "2024-03"})
    dead = pubsub_v1.PublisherClient()
    payload = {"action": "run_task", "pipeline": PIPELINE, "batch_id": "2024-03", "task": "x"}
    dead.publish(
        dead.topic_path(info.project_id, info.dead_letter_topic),
        json.dumps(payload).encode(),
        action="run_task",
    ).result(timeout=30)

    def recorded() -> bool:
        with stack_db.connect() as conn:
            rejected = conn.execute(
                text("SELECT count(*) FROM rejected_messages WHERE reason LIKE '%etll%'")
            ).scalar_one()
            letters = conn.execute(
                text("SELECT count(*) FROM dead_letters WHERE task = 'x'")
            ).scalar_one()
        return bool(rejected and letters)

    wait_for(recorded, 30, "the rejected message and the dead letter")
    open_page(page, f"{info.url('status')}/rejected")
    row = page.locator("table tbody tr", has_text="etll").first
    assert '"pipeline": "<i>etll</i>"' in row.locator("pre.payload").inner_text()
    assert page.locator("pre.payload i").count() == 0  # escaped, not markup
    shot(page, "rejected")
    open_page(page, f"{info.url('status')}/dead-letters")
    row = page.locator("table tbody tr", has_text='"task": "x"').first
    assert "run_task" in row.inner_text()
    shot(page, "dead-letters")


# -- layout ---------------------------------------------------------------------------------------


def test_layout_routes_edges_around_boxes_and_spreads_a_fan_out(
    page: Page, stack: tuple[Stack, StackInfo], stack_db: Engine
) -> None:
    """The orders shape a naive layered layout draws audit -> report through enrich (see
    tests/unit/test_dashboard_graph.py), plus a 25-way fan-out from extract to load into
    report: no edge segment enters a box, and the fan-out is not one column of 25."""
    tasks = {f"ord_{n}": NOOP for n in ("extract", "validate", "audit", "cleanup", "enrich")}
    tasks |= {"ord_report": NOOP} | {f"ord_part_{i:02d}": NOOP for i in range(25)}
    edges = [
        ("ord_extract", "ord_validate"),
        ("ord_validate", "ord_audit"),
        ("ord_validate", "ord_cleanup"),
        ("ord_validate", "ord_enrich"),
        ("ord_cleanup", "ord_enrich"),
        ("ord_audit", "ord_report"),
        ("ord_enrich", "ord_report"),
        *((("ord_extract", f"ord_part_{i:02d}")) for i in range(25)),
        *(((f"ord_part_{i:02d}", "ord_report")) for i in range(25)),
    ]
    insert_with_sql(stack_db, ORDERS, tasks, edges)
    open_page(page, f"{stack[1].url('status')}/pipelines/{ORDERS}", graph=True)
    drawn = geometry(page)
    assert len(drawn["boxes"]) == 31
    assert len(drawn["edges"]) >= len(edges)
    assert crossings(drawn) == []
    part_columns = {b["x"] for b in drawn["boxes"] if b["id"].startswith("ord_part_")}
    assert len(part_columns) >= 3, part_columns
    assert drawn["height"] < 25 * 46, drawn["height"]  # shorter than one column of 25 boxes
    shot(page, "layout-orders")

    page.select_option("#graph-mode", "prefix")
    page.wait_for_selector('#graph[data-layout="done"] g.node.group[data-group="p:ord_part_*"]')
    assert crossings(geometry(page)) == []
    assert page.locator("#graph").get_attribute("data-boxes") == "2"  # ord_* and ord_part_*
    page.locator('g.node.group[data-group="p:ord_*"]').click()
    page.wait_for_selector('#graph[data-boxes="7"][data-layout="done"]')
    assert crossings(geometry(page)) == []
    shot(page, "layout-orders-grouped")
    page.locator('g.node.group[data-group="p:ord_part_*"]').click()
    page.wait_for_selector('#graph[data-boxes="31"][data-layout="done"]')
    assert crossings(geometry(page)) == []


# -- live refresh and actions (on the operator function) ------------------------------------------


@pytest.fixture(scope="module")
def slow_pipeline(stack_db: Engine) -> str:
    insert_with_sql(
        stack_db,
        "e2e_slow",
        {"slow_start": NOOP, "slow_wait": ("python.sleep", '{"seconds": 6}'), "slow_end": NOOP},
        [("slow_start", "slow_wait"), ("slow_wait", "slow_end")],
    )
    return "e2e_slow"


def batch_row(db: Engine, pipeline: str, batch_id: str) -> dict[str, Any] | None:
    with db.connect() as conn:
        row = (
            conn.execute(
                text(
                    "SELECT status::text, triggered_by FROM batches "
                    "WHERE pipeline = :p AND batch_id = :b"
                ),
                {"p": pipeline, "b": batch_id},
            )
            .mappings()
            .first()
        )
    return dict(row) if row else None


def test_trigger_from_the_dashboard_and_watch_it_live(
    page: Page, stack: tuple[Stack, StackInfo], stack_db: Engine, slow_pipeline: str
) -> None:
    info = stack[1]
    open_page(page, f"{info.url('operate')}/?pipeline={slow_pipeline}")
    page.locator("details.trigger summary").click()
    form = page.locator('form[data-action="trigger"]')
    form.locator('select[name="pipeline"]').select_option(slow_pipeline)
    form.locator('input[name="batch_id"]').fill("live-1")
    form.locator('input[name="params"]').fill('{"month": "2024-04"}')
    shot(page, "trigger-form")
    form.locator("button").click()
    assert "1 message published" in page.locator("p.notice").inner_text()
    shot(page, "published")
    wait_for(lambda: batch_row(stack_db, slow_pipeline, "live-1") is not None, 30, "the batch")
    assert batch_row(stack_db, slow_pipeline, "live-1") == {
        "status": "RUNNING",
        "triggered_by": "dashboard:local",
    }

    open_page(page, f"{info.url('operate')}/batches/{slow_pipeline}/live-1", graph=True)
    page.wait_for_selector(
        'g.node[data-task="slow_wait"][data-status="PROCESSING"]', timeout=20_000
    )
    assert page.locator("body").get_attribute("data-poll")
    shot(page, "batch-running")
    # no reload by the test: the page polls the API and reloads itself when the batch ends
    page.wait_for_selector("h1 .pill.status-SUCCESS", timeout=30_000)
    assert node(page, "slow_end").get_attribute("data-status") == "SUCCESS"
    assert page.locator("body").get_attribute("data-poll") is None


def test_cancel_from_the_dashboard(
    page: Page,
    stack: tuple[Stack, StackInfo],
    stack_db: Engine,
    publish: Callable[..., str],
    slow_pipeline: str,
) -> None:
    info = stack[1]
    publish({"action": "start_batch", "pipeline": slow_pipeline, "batch_id": "cancel-1"})
    wait_for(lambda: batch_row(stack_db, slow_pipeline, "cancel-1") is not None, 30, "the batch")
    open_page(page, f"{info.url('operate')}/batches/{slow_pipeline}/cancel-1", graph=True)
    page.locator('form[data-action="cancel"] button').click()
    assert "1 message published" in page.locator("p.notice").inner_text()
    wait_for(
        lambda: (batch_row(stack_db, slow_pipeline, "cancel-1") or {}).get("status") == "CANCELLED",
        30,
        "the cancel",
    )
    open_page(page, f"{info.url('operate')}/batches/{slow_pipeline}/cancel-1", graph=True)
    assert page.locator("h1 .pill.status-CANCELLED").count() == 1
    assert page.locator('form[data-action="cancel"]').count() == 0
    shot(page, "batch-cancelled")


def attempts(db: Engine, pipeline: str, batch_id: str, task: str) -> int:
    with db.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM task_attempts a JOIN tasks t USING (task_id) "
                    "WHERE a.batch_id = :b AND t.name = :t AND t.pipeline = :p"
                ),
                {"p": pipeline, "b": batch_id, "t": task},
            ).scalar_one()
        )


def attempted_since(db: Engine, task: str, before: int) -> bool:
    """Whether ``task`` of the test's batch has more attempts than ``before``."""
    return attempts(db, PIPELINE, "2024-03", task) > before


def test_rerun_a_task_with_and_without_downstream_and_rerun_failed(
    failed_batch: str,
    page: Page,
    stack: tuple[Stack, StackInfo],
    stack_db: Engine,
    wait_batch: Callable[..., dict[str, Any]],
) -> None:
    base = failed_batch.replace(stack[1].url("status"), stack[1].url("operate"))
    steps = [
        ("dash_audit", 'form[data-action="rerun"]:not(:has(input[name="downstream"])) button'),
        ("dash_transform", 'form[data-action="rerun"]:has(input[name="downstream"]) button'),
    ]
    for task, button in steps:
        before = attempts(stack_db, PIPELINE, "2024-03", task)
        open_page(page, f"{base}/tasks/{task}")
        page.locator(button).click()
        assert "1 message published" in page.locator("p.notice").inner_text()
        wait_for(partial(attempted_since, stack_db, task, before), 30, task)
        assert wait_batch(PIPELINE, "2024-03")["status"] == "FAILED"
    open_page(page, f"{base}/tasks/dash_transform")
    runs = page.locator("table tbody tr span.run").all_inner_texts()
    assert runs == ["run 1", "run 2"]
    shot(page, "task-rerun")

    before = attempts(stack_db, PIPELINE, "2024-03", "dash_transform")
    open_page(page, base, graph=True)
    shot(page, "batch-operator")
    page.locator('form[data-action="rerun-failed"] button').click()
    assert "1 message published" in page.locator("p.notice").inner_text()
    wait_for(
        lambda: attempts(stack_db, PIPELINE, "2024-03", "dash_transform") > before, 30, "rerun"
    )
    assert wait_batch(PIPELINE, "2024-03")["status"] == "FAILED"
    with stack_db.connect() as conn:
        logged = conn.execute(
            text("SELECT count(*) FROM rejected_messages WHERE reason LIKE 'rerun%'")
        )
        assert logged.scalar_one() == 0


def test_the_viewers_function_refuses_actions(
    page: Page, stack: tuple[Stack, StackInfo], failed_batch: str
) -> None:
    open_page(page, failed_batch)
    response = page.request.post(
        f"{stack[1].url('status')}/actions/cancel",
        form={"pipeline": PIPELINE, "batch_id": "2024-03"},
    )
    assert response.status == 403
    assert "read-only" in response.text()
