"""Run a whole batch of a pipeline inside a test, like Airflow's ``dag.test()``; or one
handler alone.

The engine is the real one (built by ``build_engine``), on a database of the real PostgreSQL
(a copy of a template migrated once per server, emptied between tests: ``databases``); the
messages it publishes are delivered in-process instead of through Pub/Sub -- in order, or
shuffled and duplicated with a seed, without waiting in real time (``runner``). Handlers can be
replaced by fakes per task. With ``duplicate=True`` every message is delivered twice and every
handler runs twice per attempt with the same context, as at-least-once delivery may do: a
handler whose second run fails, returns something else, or repeats a side effect recorded in a
``SideEffects`` fake without ``context.idempotency_key`` ends its task in ERROR, naming it
(``effects``). A mapped task's result has one ``ItemResult`` per item (``result["t"].items``).

    def test_etl(dagrelay_runner):
        sent = SideEffects()
        export = lambda ctx: sent.record("upload", ctx.params, key=ctx.idempotency_key)
        result = dagrelay_runner.run(etl, fakes={"export": export}, duplicate=True)
        assert result.status == "SUCCESS"
        assert result["extract"].output == {"rows": 3}
        assert len(sent.applied) == 1

    def test_export_alone():
        assert run_handler(export, {"table": "t"}, parents={"extract": {"rows": 3}}) == {...}

The pytest fixture ``dagrelay_runner`` (``dagrelay.pytest_plugin``) makes one per test;
``run_handler`` (``handler``) needs no database.
"""

from __future__ import annotations

from dagrelay.testing.databases import (
    ADMIN_URL,
    SessionDatabase,
    pooled_engine,
    template_database,
    temporary_database,
)
from dagrelay.testing.effects import Effect, SideEffects
from dagrelay.testing.handler import run_handler
from dagrelay.testing.runner import (
    BatchResult,
    FakeClock,
    ItemResult,
    PipelineRunner,
    TaskResult,
)

__all__ = [
    "ADMIN_URL",
    "BatchResult",
    "Effect",
    "FakeClock",
    "ItemResult",
    "PipelineRunner",
    "SessionDatabase",
    "SideEffects",
    "TaskResult",
    "pooled_engine",
    "run_handler",
    "template_database",
    "temporary_database",
]
