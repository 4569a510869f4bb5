"""``python -m local_emulator up --project DIR``: the router loads the team's handlers from the
project, and a change to one of its files restarts the router on the same port, which then runs
the new code."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import pubsub_v1
from sqlalchemy import create_engine, text

from dagrelay.local.processes import wait_for
from dagrelay.local.stack import ProjectWatcher, Stack, StackConfig, StackInfo
from dagrelay.scaffold import write_project
from dagrelay.store.reads import batch_outputs

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DAGRELAY = REPO / ".venv" / "bin" / "dagrelay"


@pytest.fixture
def team(tmp_path: Path) -> Path:
    return write_project(tmp_path / "reload").root


@pytest.fixture
def project_stack(
    team: Path, pubsub_emulator: str, db_url: str, tmp_path: Path, unique: str
) -> Iterator[tuple[Stack, StackInfo]]:
    config = StackConfig(
        database_url=db_url,
        project_id="dagrelay-test",
        events_topic=f"events-{unique}",
        subscription=f"events-{unique}-router",
        emulator_host=pubsub_emulator,
        data_services=False,
        sweep_interval_s=0,
        functions=("router",),
        workdir=tmp_path / "stack",
        project=team,
    )
    stack = Stack(config)
    info = stack.start()
    yield stack, info
    stack.stop()


def trigger_and_wait(info: StackInfo, pipeline: str, batch_id: str) -> dict[str, Any]:
    client = pubsub_v1.PublisherClient()
    message = {"action": "start_batch", "pipeline": pipeline, "batch_id": batch_id}
    client.publish(
        client.topic_path(info.project_id, info.events_topic),
        json.dumps(message).encode(),
        action="start_batch",
    ).result(timeout=30)
    engine = create_engine(info.database_url)
    found: dict[str, Any] = {}

    def done() -> bool:
        with engine.connect() as conn:
            found["status"] = conn.execute(
                text("SELECT status::text FROM batches WHERE pipeline = :p AND batch_id = :b"),
                {"p": pipeline, "b": batch_id},
            ).scalar_one_or_none()
            found["outputs"] = batch_outputs(conn, pipeline, batch_id)
        return found["status"] in ("SUCCESS", "FAILED")

    try:
        wait_for(done, 60, f"batch {batch_id}")
    finally:
        engine.dispose()
    return found


def test_up_loads_the_project_and_reloads_it_on_change(
    team: Path, project_stack: tuple[Stack, StackInfo]
) -> None:
    stack, info = project_stack
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGRELAY_")}
    applied = subprocess.run(
        [str(DAGRELAY), "pipeline", "apply", "pipelines/orders.py"],
        cwd=team,
        env={**env, "DATABASE_URL": info.database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    watcher = ProjectWatcher(team)
    assert not watcher.changed()

    first = trigger_and_wait(info, "reload_orders", "b1")
    assert first["status"] == "SUCCESS", first
    assert "version" not in first["outputs"]["score"]

    handler = team / "handlers" / "orders.py"
    source = handler.read_text()
    handler.write_text(source.replace('"currency": ctx.params.currency,', '"version": 2,'))
    assert watcher.changed()
    assert not watcher.changed()
    router_url = info.router_url
    stack.reload_router()
    stack.check_alive()

    second = trigger_and_wait(info, "reload_orders", "b2")
    assert second["status"] == "SUCCESS", second
    assert second["outputs"]["score"]["version"] == 2
    assert f"http://127.0.0.1:{stack.router_port}" == router_url
