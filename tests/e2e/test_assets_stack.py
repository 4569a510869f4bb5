"""End to end: two upstream pipelines each update an asset; their batches, started by messages
published twice each at once through Pub/Sub and the router, start exactly one batch of the
pipeline waiting for both assets, with both upstream batches recorded as its trigger."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dagrelay.local.processes import wait_for
from dagrelay.pipelines.apply import apply as apply_pipeline
from dagrelay.pipelines.on_assets import OnAssets
from dagrelay.pipelines.spec import PipelineSpec, PipelineTask

pytestmark = pytest.mark.e2e

WaitBatch = Callable[..., dict[str, Any]]


def test_two_upstream_batches_start_one_downstream_batch(
    stack_db: Engine, publish: Callable[..., str], wait_batch: WaitBatch, unique: str
) -> None:
    sales, expenses = f"bq://e2e_{unique}.sales", f"bq://e2e_{unique}.expenses"
    down = f"profit_{unique}"
    specs = [
        PipelineSpec(
            f"sales_{unique}", (PipelineTask(f"s_{unique}", "python.noop", updates=(sales,)),)
        ),
        PipelineSpec(
            f"expenses_{unique}", (PipelineTask(f"e_{unique}", "python.noop", updates=(expenses,)),)
        ),
        PipelineSpec(
            down,
            (PipelineTask(f"p_{unique}", "python.noop"),),
            on_assets=OnAssets((sales, expenses), "{partition}"),
        ),
    ]
    with stack_db.begin() as conn:
        for spec in specs:
            apply_pipeline(conn, spec)
    starts = [
        {
            "action": "start_batch",
            "pipeline": pipeline,
            "batch_id": f"{pipeline}-2024-03",
            "params": {"asset_partition": "2024-03"},
        }
        for pipeline in (f"sales_{unique}", f"expenses_{unique}")
    ]
    with ThreadPoolExecutor(4) as pool:  # each start twice, all at once
        list(pool.map(publish, starts * 2))

    def downstream() -> list[Any]:
        with stack_db.connect() as conn:
            return list(
                conn.execute(
                    text("SELECT batch_id, triggered_by FROM batches WHERE pipeline = :p"),
                    {"p": down},
                )
            )

    wait_for(lambda: bool(downstream()), 30, f"a batch of {down}", poll_s=0.05)
    for start in starts:
        assert wait_batch(start["pipeline"], start["batch_id"], 30)["status"] == "SUCCESS"
    assert wait_batch(down, "2024-03", 30)["status"] == "SUCCESS"
    ((batch_id, triggered_by),) = downstream()  # every upstream batch finished: still one
    assert (batch_id, triggered_by) == ("2024-03", f"assets: {expenses}, {sales}")
    with stack_db.connect() as conn:
        trigger = conn.execute(
            text(
                "SELECT e.pipeline, e.batch_id FROM asset_triggers c "
                "JOIN asset_events e USING (event_id) WHERE c.pipeline = :p ORDER BY 1"
            ),
            {"p": down},
        ).all()
    assert [tuple(t) for t in trigger] == [
        (s["pipeline"], s["batch_id"]) for s in sorted(starts, key=lambda s: str(s["pipeline"]))
    ]
