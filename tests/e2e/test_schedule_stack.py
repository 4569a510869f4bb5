"""End to end: the local stack's sweep loop (every 5 s, through Pub/Sub and the router) starts
an every-minute schedule's due tick, and the batch runs to the end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dagrelay.local.processes import wait_for
from dagrelay.pipelines.apply import apply as apply_pipeline
from dagrelay.pipelines.spec import PipelineSpec, PipelineTask

pytestmark = pytest.mark.e2e

WaitBatch = Callable[..., dict[str, Any]]


def test_the_sweep_loop_starts_an_every_minute_schedule(
    stack_db: Engine, wait_batch: WaitBatch, unique: str
) -> None:
    pipeline = f"every_minute_{unique}"
    spec = PipelineSpec(
        pipeline,
        (
            PipelineTask(f"tick_{unique}", "python.noop"),
            PipelineTask(f"tock_{unique}", "python.noop", parents=(f"tick_{unique}",)),
        ),
    )
    with stack_db.begin() as conn:
        apply_pipeline(conn, spec)
        # A tick one minute ago is due now: the next sweep starts it (no waiting for a minute).
        conn.execute(
            text(
                "INSERT INTO schedules (pipeline, cron, next_run_at) VALUES "
                "(:p, '* * * * *', date_trunc('minute', now()) - interval '1 minute')"
            ),
            {"p": pipeline},
        )

    def started() -> list[Any]:
        with stack_db.connect() as conn:
            return list(
                conn.execute(
                    text("SELECT batch_id, triggered_by, params FROM batches WHERE pipeline = :p"),
                    {"p": pipeline},
                )
            )

    wait_for(lambda: bool(started()), 60, f"a batch of {pipeline}", poll_s=0.1)
    with stack_db.begin() as conn:  # no more ticks: the next minute would start another batch
        conn.execute(
            text("UPDATE schedules SET paused = true WHERE pipeline = :p"), {"p": pipeline}
        )
    batch_id, triggered_by, params = started()[0]
    assert triggered_by == f"schedule:{pipeline}"
    assert params["scheduled_for"].startswith(batch_id)  # the default template, in UTC
    report = wait_batch(pipeline, batch_id)
    assert report["status"] == "SUCCESS"
    with stack_db.connect() as conn:
        ahead = conn.execute(
            text("SELECT next_run_at > now() FROM schedules WHERE pipeline = :p"), {"p": pipeline}
        ).scalar_one()
    assert ahead  # the schedule moved on to the next minute
    ticks = [row.params["scheduled_for"] for row in started()]
    assert len(ticks) == len(set(ticks))  # however many sweeps ran, one batch per tick
