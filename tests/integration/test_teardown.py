"""Teardown tasks (issue 18, problem 7): a task with ``teardown: true`` runs once its parents
are done, whatever their outcome — also when the batch fails or is cancelled. A cancel spares
the teardown tasks that have not run: the batch stays CANCELLING until they end, then it is
CANCELLED; a teardown's own failure does not hide the batch's outcome."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.core import RunOutcome
from dagrelay.errors import NonRetryableError, PipelineError
from dagrelay.handlers.registry import HandlerContext, HandlerRegistry
from dagrelay.messages import CancelBatch, Resume, RunTask, StartBatch
from dagrelay.pipelines import api
from dagrelay.pipelines.apply import apply
from dagrelay.pipelines.export import export_yaml, read_pipeline
from dagrelay.pipelines.spec import load_pipeline
from dagrelay.pipelines.validate import validate
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock
from tests.integration.helpers import Gate, batch_status, drive, make_engine, scalar, statuses

pytestmark = pytest.mark.integration


class Handlers:
    def __init__(self) -> None:
        self.gate = Gate()
        self.gated = False
        self.failing: set[str] = set()
        self.runs: list[str] = []
        self.registry = HandlerRegistry()
        self.registry.register("t.run", self.run)

    def run(self, ctx: HandlerContext) -> dict[str, Any]:
        if ctx.task == "work" and self.gated:
            self.gate(ctx)
        self.runs.append(ctx.task)
        if ctx.task in self.failing:
            raise NonRetryableError(f"{ctx.task} failed for good")
        return {}


@pytest.fixture
def handlers() -> Handlers:
    return Handlers()


@pytest.fixture
def dag(
    db: Engine, publisher: InMemoryPublisher, clock: FakeClock, handlers: Handlers
) -> DagEngine:
    return make_engine(db, publisher, clock, registry=handlers.registry)


@pytest.fixture
def pipeline(db: Engine, insert_pipeline: Any) -> None:
    """work -> after; cleanup (teardown) after both; report (teardown) after cleanup."""
    edges = {"work": [], "after": ["work"], "cleanup": ["work", "after"], "report": ["cleanup"]}
    insert_pipeline("p", edges, handlers=dict.fromkeys(edges, "t.run"))
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE tasks SET teardown = true, trigger_rule = 'all_done' "
                "WHERE name IN ('cleanup', 'report')"
            )
        )


def start(dag: DagEngine, publisher: InMemoryPublisher) -> None:
    dag.start_batch(StartBatch("p", "b1"))
    publisher.drain()


def cancel_while_work_runs(dag: DagEngine, handlers: Handlers) -> dict[str, str]:
    """Cancel while ``work`` runs; the statuses seen right after the cancel."""
    handlers.gated = True
    running = threading.Thread(target=lambda: dag.run_task(RunTask("b1", "work", pipeline="p")))
    running.start()
    try:
        assert handlers.gate.entered.wait(10)
        assert dag.cancel_batch(CancelBatch("p", "b1")) is not None
        return statuses(dag.db, "b1")
    finally:
        handlers.gate.release.set()
        running.join(10)


@pytest.mark.usefixtures("pipeline")
def test_a_cancel_spares_teardowns_and_waits_for_them(
    dag: DagEngine, db: Engine, publisher: InMemoryPublisher, handlers: Handlers
) -> None:
    start(dag, publisher)
    at_cancel = cancel_while_work_runs(dag, handlers)
    assert at_cancel == {"work": "PROCESSING", "after": "CANCELLED"}
    # work ended: the teardown starts; the batch waits for it.
    assert statuses(db, "b1") == {"work": "SUCCESS", "after": "CANCELLED", "cleanup": "NEW"}
    assert batch_status(db, "p", "b1") == "CANCELLING"
    drive(dag, publisher)
    assert statuses(db, "b1") == {
        "work": "SUCCESS", "after": "CANCELLED", "cleanup": "SUCCESS", "report": "SUCCESS",
    }  # fmt: skip
    assert handlers.runs == ["work", "cleanup", "report"]
    assert batch_status(db, "p", "b1") == "CANCELLED"
    assert scalar(db, "SELECT finished_at IS NOT NULL FROM batches")

    # Resume runs what never ran, and the teardowns again after it.
    dag.resume(Resume("p", "b1"))
    drive(dag, publisher)
    assert batch_status(db, "p", "b1") == "SUCCESS"
    assert handlers.runs == ["work", "cleanup", "report", "after", "cleanup", "report"]


@pytest.mark.usefixtures("pipeline")
def test_a_cancel_with_nothing_running_starts_the_teardowns_at_once(
    dag: DagEngine, db: Engine, publisher: InMemoryPublisher, handlers: Handlers
) -> None:
    start(dag, publisher)
    done = dag.cancel_batch(CancelBatch("p", "b1"))
    assert done is not None
    assert done.status == "CANCELLING"
    assert statuses(db, "b1") == {"work": "CANCELLED", "after": "CANCELLED", "cleanup": "NEW"}
    handlers.failing = {"cleanup"}  # a teardown's failure does not turn a cancel into FAILED
    drive(dag, publisher)
    assert handlers.runs == ["cleanup", "report"]
    assert batch_status(db, "p", "b1") == "CANCELLED"


@pytest.mark.usefixtures("pipeline")
@pytest.mark.parametrize(
    ("failing", "expected"),
    [
        pytest.param({"work"}, "FAILED", id="work fails"),
        pytest.param({"cleanup"}, "FAILED", id="the teardown fails"),
        pytest.param(set(), "SUCCESS", id="nothing fails"),
    ],
)
def test_teardowns_run_whatever_happened(
    dag: DagEngine,
    db: Engine,
    publisher: InMemoryPublisher,
    handlers: Handlers,
    failing: set[str],
    expected: str,
) -> None:
    handlers.failing = failing
    start(dag, publisher)
    assert dag.run_task(RunTask("b1", "work", pipeline="p")) in (
        RunOutcome.SUCCESS,
        RunOutcome.ERROR,
    )
    drive(dag, publisher)
    assert handlers.runs[-2:] == ["cleanup", "report"]
    assert batch_status(db, "p", "b1") == expected


TEARDOWN_YAML = """
pipeline: td
tasks:
  - name: work
    handler: python.noop
  - name: cleanup
    handler: python.noop
    parents: [work]
    teardown: true
"""


def test_a_pipeline_file_declares_teardown_and_exports_it(db: Engine, tmp_path: Path) -> None:
    path = tmp_path / "td.yaml"
    path.write_text(TEARDOWN_YAML, encoding="utf-8")
    spec = load_pipeline(path)
    (cleanup,) = [t for t in spec.tasks if t.name == "cleanup"]
    assert cleanup.teardown
    assert cleanup.trigger_rule == "all_done", "a teardown runs whatever its parents' outcome"
    with db.begin() as conn:
        apply(conn, spec)
    with db.connect() as conn:
        exported = export_yaml(read_pipeline(conn, "td"))
    assert "teardown: true" in exported
    assert "trigger_rule" not in exported.split("name: cleanup")[1]
    with db.begin() as conn:
        before = scalar(db, "SELECT count(*) FROM pipeline_versions")
        conn.execute(text("SELECT dagrelay_pipeline_version('td', now())"))
        conn.execute(text("UPDATE tasks SET teardown = false WHERE name = 'cleanup'"))
        conn.execute(text("SELECT dagrelay_pipeline_version('td', now())"))
    versions = scalar(db, "SELECT count(*) FROM pipeline_versions WHERE pipeline = 'td'")
    assert versions - before == 2, "the flag is part of the version's content"
    assert scalar(db, "SELECT count(*) FROM version_tasks WHERE teardown") == 1


def test_a_teardown_with_another_trigger_rule_or_a_map_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "td.yaml"
    path.write_text(
        TEARDOWN_YAML + "    trigger_rule: all_success\n    map: {over: work.items}\n",
        encoding="utf-8",
    )
    with pytest.raises(PipelineError) as refused:
        validate(load_pipeline(path), ["python.noop"])
    text_ = str(refused.value)
    assert "teardown" in text_
    assert "all_success" in text_
    assert "map" in text_


def test_the_python_api_declares_teardown() -> None:
    pipeline = api.Pipeline("td")
    work = pipeline.add("work", handler="python.noop")
    pipeline.add("cleanup", handler="python.noop", parents=[work], teardown=True)
    (cleanup,) = [t for t in pipeline.spec().tasks if t.name == "cleanup"]
    assert cleanup.teardown
    assert cleanup.trigger_rule == "all_done"
