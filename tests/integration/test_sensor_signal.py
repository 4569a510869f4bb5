"""The signal sensor (ARCHITECTURE.md, "Sensors"): a ``signal`` message recorded once ends the
sensors waiting for its key at once (its handling enqueues their polls); one sent after the
batch started counts even before the sensor waits; a timeout ends the task ERROR or SKIPPED
naming what was awaited; a cancel ends it CANCELLED and it is polled no more; a poll delivered
twice changes nothing twice; a malformed signal is rejected with its reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from rich.console import Console
from sqlalchemy import Engine, text

from dagrelay.cli.explain import explain_tree
from dagrelay.cli.render import problem
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.states import Action, BatchStatus, TaskStatus
from dagrelay.store import reads
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock
from tests.integration.helpers import ALERTS_TOPIC, scalar
from tests.integration.sensor_harness import Sensors, params
from tests.integration.test_dashboard import client  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]
SIGNAL = Action.SIGNAL.value


@pytest.fixture
def sensors(
    db: Engine, engine: DagEngine, publisher: InMemoryPublisher, clock: FakeClock
) -> Sensors:
    return Sensors(db, engine, publisher, clock)


def pipeline(insert_pipeline: InsertPipeline, **sensor: Any) -> None:
    """wait (sensor.signal) -> report (python.noop)."""
    values = {"key": "crm.{batch_id}", "poke_interval_s": 300, "timeout_s": 900} | sensor
    insert_pipeline(
        "p",
        {"report": ["wait"]},
        handlers={"wait": "sensor.signal"},
        params={"wait": params(**values)},
    )


def signal(key: str, **fields: Any) -> dict[str, Any]:
    return {"action": SIGNAL, "key": key, **fields}


def test_a_signal_ends_the_waiting_sensor_at_once(
    sensors: Sensors, insert_pipeline: InsertPipeline
) -> None:
    pipeline(insert_pipeline)
    sensors.start("p", "b1")
    waiting = sensors.row("wait")
    assert waiting["status"] == TaskStatus.PROCESSING
    assert waiting["job"]["waiting_for"] == "signal crm.b1"
    assert sensors.held_polls() == 1  # its next poke, 300 s on; nothing else is pending
    sensors.clock.advance(5)
    assert sensors.send(signal("crm.b1", payload={"rows": 3})) == "signal: 1 sensors woken"
    assert sensors.deliver()[0] == "success"  # the woken poll, not the poke 295 s later
    done = sensors.row("wait")
    assert done["status"] == TaskStatus.SUCCESS
    assert done["output"]["payload"] == {"rows": 3}
    assert done["output"]["key"] == "crm.b1"
    assert sensors.row("report")["status"] == TaskStatus.SUCCESS
    assert sensors.batch("p") == BatchStatus.SUCCESS
    assert sensors.poke(300) == ["ignored"]  # the held poke finds the attempt finished


def test_a_signal_sent_after_the_batch_started_counts_before_the_sensor_waits(
    sensors: Sensors, insert_pipeline: InsertPipeline
) -> None:
    pipeline(insert_pipeline)
    sensors.send(signal("crm.b1", payload={"n": 1}))  # before the batch: does not count
    sensors.clock.advance(1)
    sensors.send({"action": "start_batch", "pipeline": "p", "batch_id": "b1"})
    sensors.clock.advance(1)
    assert sensors.send(signal("crm.b1", payload={"n": 2})) == "signal: 0 sensors woken"
    sensors.deliver()  # the sensor starts now and finds the signal at its first poll
    assert sensors.row("wait")["output"]["payload"] == {"n": 2}
    assert sensors.batch("p") == BatchStatus.SUCCESS


def test_a_signal_from_before_the_batch_does_not_count(
    sensors: Sensors, insert_pipeline: InsertPipeline
) -> None:
    pipeline(insert_pipeline)
    sensors.send(signal("crm.b1"))
    sensors.clock.advance(1)
    sensors.start("p", "b1")
    assert sensors.row("wait")["status"] == TaskStatus.PROCESSING


def test_since_task_waits_for_a_signal_after_the_task_became_due(
    sensors: Sensors, insert_pipeline: InsertPipeline
) -> None:
    insert_pipeline(
        "p",
        {"wait": ["first"]},
        handlers={"wait": "sensor.signal"},
        params={"wait": params(key="go", since="task", timeout_s=900)},
    )
    sensors.send({"action": "start_batch", "pipeline": "p", "batch_id": "b1"})
    sensors.clock.advance(1)
    sensors.send(signal("go"))  # after the batch started, before wait's row exists
    sensors.clock.advance(1)
    sensors.deliver()
    assert sensors.row("wait")["status"] == TaskStatus.PROCESSING
    sensors.send(signal("go", signal_id="second"))
    sensors.deliver()
    assert sensors.row("wait")["status"] == TaskStatus.SUCCESS


@pytest.mark.parametrize(
    ("on_timeout", "status", "child", "batch"),
    [
        ("error", TaskStatus.ERROR, TaskStatus.UPSTREAM_FAILED, BatchStatus.FAILED),
        ("skip", TaskStatus.SKIPPED, TaskStatus.SKIPPED, BatchStatus.SUCCESS),
    ],
)
def test_a_timeout_names_what_was_awaited(
    sensors: Sensors,
    insert_pipeline: InsertPipeline,
    publisher: InMemoryPublisher,
    on_timeout: str,
    status: TaskStatus,
    child: TaskStatus,
    batch: BatchStatus,
) -> None:
    pipeline(insert_pipeline, on_timeout=on_timeout)
    sensors.start("p", "b1")
    assert sensors.poke(300) == ["deferred"]
    assert sensors.poke(300) == ["deferred"]
    assert sensors.row("wait")["status"] == TaskStatus.PROCESSING
    sensors.poke(300)  # 900 s: the deadline
    ended = sensors.row("wait")
    assert ended["status"] == status
    assert ended["error"].endswith(
        "timed out after 900 s waiting for signal crm.b1 (since 2024-03-01T00:00:00+00:00)"
    )
    assert sensors.row("report")["status"] == child
    assert sensors.batch("p") == batch
    alerts = publisher.drain(ALERTS_TOPIC)
    assert len(alerts) == (1 if status == TaskStatus.ERROR else 0)
    assert sensors.held_polls() == 0


def test_a_cancel_ends_the_waiting_sensor_and_it_is_polled_no_more(
    sensors: Sensors, insert_pipeline: InsertPipeline
) -> None:
    pipeline(insert_pipeline)
    sensors.start("p", "b1")
    assert sensors.send({"action": "cancel_batch", "pipeline": "p", "batch_id": "b1"}) == (
        BatchStatus.CANCELLING.lower()
    )
    assert sensors.deliver() == ["cancelled"]  # the cancel's wake, at once: not in 300 s
    cancelled = sensors.row("wait")
    assert cancelled["status"] == TaskStatus.CANCELLED
    assert cancelled["error"] == "cancelled while waiting for signal crm.b1"
    assert cancelled["job"] is None
    assert sensors.batch("p") == BatchStatus.CANCELLED
    assert sensors.poke(300) == ["ignored"]  # its held poke
    assert sensors.send(signal("crm.b1")) == "signal: 0 sensors woken"
    assert sensors.poke(3600) == []


def test_a_poll_delivered_twice_changes_nothing_twice(
    sensors: Sensors, insert_pipeline: InsertPipeline
) -> None:
    pipeline(insert_pipeline)
    sensors.send({"action": "start_batch", "pipeline": "p", "batch_id": "b1"})
    assert sensors.deliver(copies=2) == ["deferred", "ignored", "deferred", "ignored"]
    first = sensors.row("wait")
    assert sensors.held_polls() == 1
    assert sensors.poke(300, copies=2) == ["deferred", "ignored"]
    assert sensors.held_polls() == 1  # one chain of polls, not two
    assert sensors.row("wait")["poll_at"] > first["poll_at"]
    sensors.send(signal("crm.b1"))
    # wait's woken poll twice, then report's run_task twice
    assert sensors.deliver(copies=2) == ["success", "ignored", "success", "ignored"]
    assert scalar(sensors.db, "SELECT count(*) FROM task_attempts") == 2  # wait and report


def test_a_signal_is_recorded_once_under_duplicate_delivery(
    sensors: Sensors, insert_pipeline: InsertPipeline
) -> None:
    pipeline(insert_pipeline)
    sensors.start("p", "b1")
    message = signal("crm.b1", payload={"a": 1})
    assert sensors.send(message, "pubsub-1") == "signal: 1 sensors woken"
    assert sensors.send(message, "pubsub-1") == "duplicate"  # redelivered
    resent = signal("crm.b1", signal_id="s-1")
    assert sensors.send(resent, "pubsub-2") == "signal: 1 sensors woken"
    assert sensors.send(resent, "pubsub-3") == "duplicate"  # published twice by its sender
    assert scalar(sensors.db, "SELECT count(*) FROM signals") == 2
    assert sensors.deliver() == ["success", "ignored", "success"]  # wait (woken twice), report


def test_a_rerun_of_a_batch_sensor_finds_the_batch_s_signal_again(
    sensors: Sensors, insert_pipeline: InsertPipeline
) -> None:
    pipeline(insert_pipeline)
    sensors.start("p", "b1")
    sensors.send(signal("crm.b1", payload={"n": 1}))
    sensors.deliver()
    sensors.send({"action": "rerun", "pipeline": "p", "batch_id": "b1", "task": "wait"})
    sensors.deliver()
    assert sensors.row("wait")["status"] == TaskStatus.SUCCESS
    assert sensors.row("wait")["attempt"] == 1
    assert sensors.batch("p") == BatchStatus.SUCCESS


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"action": SIGNAL}, "'key' is a required property"),
        ({"action": SIGNAL, "key": 7}, "7 is not of type 'string'"),
        ({"action": SIGNAL, "key": "has space"}, "does not match"),
        ({"action": SIGNAL, "key": ""}, "does not match"),
        ({"action": SIGNAL, "key": "k", "payload": [1]}, "is not of type 'object'"),
        ({"action": SIGNAL, "key": "k", "payload": {"x": "y" * 20_000}}, "the limit is 16384"),
        ({"action": SIGNAL, "key": "k", "extra": 1}, "unknown key 'extra'"),
        ({"action": SIGNAL, "key": "k", "signal_id": ""}, "signal_id"),
    ],
)
def test_a_malformed_signal_is_rejected_with_its_reason_and_acknowledged(
    sensors: Sensors, db: Engine, message: dict[str, Any], reason: str
) -> None:
    assert sensors.send(message) == "rejected"
    with db.connect() as conn:
        recorded = conn.execute(text("SELECT reason FROM rejected_messages")).scalar_one()
    assert recorded.startswith("signal: ")
    assert reason in recorded
    assert scalar(db, "SELECT count(*) FROM signals") == 0


def test_status_and_explain_say_what_the_sensor_waits_for_and_since_when(
    sensors: Sensors, insert_pipeline: InsertPipeline, db: Engine
) -> None:
    pipeline(insert_pipeline)
    sensors.start("p", "b1")
    with db.connect() as conn:
        (batch,) = reads.read_batches(conn, "b1", "p")
    (wait,) = [t for t in batch["tasks"] if t["task"] == "wait"]
    said = "waiting for signal crm.b1, since 2024-03-01 00:00:00 UTC"
    assert reads.waiting(wait) == said
    assert problem(wait) == said  # dagrelay status's column
    console = Console(record=True, width=200)
    console.print(explain_tree("p", "b1", batch["status"], [], waiting=[wait]))
    assert f"wait PROCESSING {said}" in console.export_text()
    sensors.send(signal("crm.b1"))
    sensors.deliver()
    with db.connect() as conn:
        (batch,) = reads.read_batches(conn, "b1", "p")
    assert [reads.waiting(t) for t in batch["tasks"]] == ["", ""]


def test_the_dashboard_says_what_the_sensor_waits_for(
    sensors: Sensors,
    insert_pipeline: InsertPipeline,
    client: FlaskClient,  # noqa: F811 - the fixture
) -> None:
    pipeline(insert_pipeline)
    sensors.start("p", "b1")
    said = "waiting for signal crm.b1, since 2024-03-01 00:00:00 UTC"
    for page in ("/batches/p/b1", "/batches/p/b1/tasks/wait"):
        response = client.get(page)
        assert response.status_code == 200
        assert said in response.get_data(as_text=True)
    task = next(
        t for t in client.get("/api/batches/p/b1").get_json()["tasks"] if t["task"] == "wait"
    )
    assert task["waiting_for"] == "signal crm.b1"
