"""The CLI never fails silently: every case where a command used to print success (or nothing)
while nothing happened now exits non-zero with a message that names the problem. Real
PostgreSQL, the real Pub/Sub emulator, and a router stand-in that pulls the test's topic and
hands each message to the real router (dagrelay.router.dispatch.Router)."""

from __future__ import annotations

import base64
import json
import threading

import pytest
from google.cloud import pubsub_v1
from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.messages import Envelope, StartBatch
from dagrelay.router.dispatch import Router
from dagrelay.store.outbox import InMemoryPublisher
from tests.conftest import FakeClock
from tests.integration import test_ops_cli as ops
from tests.integration.helpers import drive
from tests.integration.test_ops_cli import MONTHLY_PROFIT, Run, Topic, apply_file, batches

pytestmark = pytest.mark.integration
run, topic = ops.run, ops.topic  # the operator tests' fixtures


class RouterStandIn:
    """Pulls the test's topic and hands every message, as delivered, to the real router, then
    runs what the engine published: what the deployed router does, in a thread."""

    def __init__(self, topic: Topic, router: Router, publisher: InMemoryPublisher) -> None:
        self.topic, self.router, self.publisher = topic, router, publisher
        self.done = threading.Event()
        self.outcomes: list[str] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._loop)

    def __enter__(self) -> RouterStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(60)
        assert self.errors == []

    def _loop(self) -> None:
        try:
            with pubsub_v1.SubscriberClient() as subscriber:
                while not self.done.is_set():
                    response = subscriber.pull(
                        subscription=self.topic.subscription, max_messages=10, timeout=1
                    )
                    for received in response.received_messages:
                        subscriber.acknowledge(
                            subscription=self.topic.subscription, ack_ids=[received.ack_id]
                        )
                        self._handle(received.message)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.errors.append(exc)

    def _handle(self, message: pubsub_v1.types.PubsubMessage) -> None:
        data = base64.b64encode(message.data).decode()
        envelope = Envelope(data, dict(message.attributes), message.message_id)
        self.outcomes.append(self.router.handle(envelope))
        drive(self.router.engine, self.publisher)


@pytest.fixture
def router(db: Engine, engine: DagEngine, clock: FakeClock) -> Router:
    return Router(engine, db, clock, dead_letter_topic="dead-letters")


@pytest.fixture
def monthly(db: Engine) -> None:
    apply_file(db, MONTHLY_PROFIT)


def rejected_rows(db: Engine) -> list[str]:
    with db.connect() as conn:
        return list(conn.execute(text("SELECT reason FROM rejected_messages")).scalars())


# -- trigger checks before publishing ------------------------------------------------------------


@pytest.mark.usefixtures("monthly")
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ["monthly_proft", "2024-03"],
            "error: unknown pipeline 'monthly_proft' (it has no tasks) "
            "(did you mean 'monthly_profit'?)\n",
            id="misspelt pipeline",
        ),
        pytest.param(
            ["zzz", "2024-03"],
            "error: unknown pipeline 'zzz' (it has no tasks); known pipelines: monthly_profit\n",
            id="unknown pipeline",
        ),
        pytest.param(
            ["monthly_profit", "2024-03", "--start-task", "nope"],
            "error: start task 'nope' is not a task of 'monthly_profit'; its tasks: "
            "calculate_profit, load_expenses, load_sales\n",
            id="unknown start task",
        ),
        pytest.param(
            ["monthly_profit", "2024-03", "--start-task", "load_sale"],
            "error: start task 'load_sale' is not a task of 'monthly_profit' "
            "(did you mean 'load_sales'?)\n",
            id="misspelt start task",
        ),
    ],
)
def test_trigger_refuses_what_cannot_start(
    run: Run, topic: Topic, args: list[str], expected: str
) -> None:
    result = run("trigger", *args, **topic.env())

    assert (result.exit_code, result.stderr) == (2, expected)
    assert result.stdout == ""
    assert topic.pull_now() == []  # nothing was published


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('cfg={"a": 1', "cfg: '{\"a\": 1' starts like JSON but is not valid JSON"),
        ("xs=[1, 2", "xs: '[1, 2' starts like JSON but is not valid JSON"),
        ('s="open', "s: '\"open' starts like JSON but is not valid JSON"),
    ],
)
def test_trigger_refuses_a_param_that_is_broken_json(run: Run, value: str, expected: str) -> None:
    result = run("trigger", "monthly_profit", "2024-03", "--param", value)

    assert result.exit_code == 2
    assert expected in " ".join(result.stderr.split())


@pytest.mark.usefixtures("monthly")
@pytest.mark.parametrize("check", ["--check", "--no-check"])
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("n=1e999", "Infinity is not a JSON value"),
        ('s="a\\u0000b"', "NUL"),
        ("deep=" + "[" * 600 + "]" * 600, "the limit is 500"),
    ],
    ids=["1e999", "NUL", "too deep"],
)
def test_trigger_refuses_what_the_router_would_reject(
    run: Run, topic: Topic, check: str, value: str, reason: str
) -> None:
    """The CLI checks with the dashboard's function (engine.admission.check_outgoing)."""
    result = run("trigger", "monthly_profit", "2024-03", check, "--param", value, **topic.env())

    assert result.exit_code == 2, result.output
    assert "the router would reject this message" in result.stderr
    assert reason in result.stderr
    assert topic.pull_now() == []  # nothing was published


@pytest.mark.usefixtures("monthly")
def test_trigger_of_an_existing_batch_says_so_and_exits_1(
    run: Run, engine: DagEngine, publisher: InMemoryPublisher, topic: Topic
) -> None:
    engine.start_batch(StartBatch("monthly_profit", "2024-03", params={"rows": 1}))
    drive(engine, publisher)

    again = run("trigger", "monthly_profit", "2024-03", "-p", "rows=5", **topic.env())
    ignored = run("trigger", "monthly_profit", "2024-03", "--if-exists", "ignore", **topic.env())

    assert again.exit_code == 1
    assert again.stderr.startswith(
        "error: batch monthly_profit/2024-03 already exists: SUCCESS since "
    )
    assert (
        'nothing published, the --param values were NOT applied (it keeps {"rows": 1})'
        in again.stderr
    )
    assert ignored.exit_code == 0, ignored.output
    assert ignored.stdout.startswith("batch monthly_profit/2024-03 already exists: SUCCESS")
    assert topic.pull_now() == []


@pytest.mark.usefixtures("monthly")
def test_trigger_wait_follows_the_batch_to_success(
    run: Run, db: Engine, router: Router, publisher: InMemoryPublisher, topic: Topic
) -> None:
    with RouterStandIn(topic, router, publisher) as stand_in:
        result = run(
            "trigger", "monthly_profit", "2024-03", "--wait", "--poll", "0.1", "--timeout",
            "60", **topic.env(),
        )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "finished: monthly_profit/2024-03 SUCCESS"
    assert stand_in.outcomes == ["started"]
    assert batches(db, "monthly_profit") == {"2024-03": "SUCCESS"}


def test_trigger_wait_exits_1_when_the_batch_fails(
    run: Run,
    router: Router,
    publisher: InMemoryPublisher,
    topic: Topic,
    insert_pipeline: object,
) -> None:
    insert_pipeline(  # type: ignore[operator]
        "boom", {"b": ["a"]}, handlers={"a": "python.fail"},
        params={"a": '{"message": "disk on fire", "retryable": false}'},
    )  # fmt: skip
    with RouterStandIn(topic, router, publisher):
        result = run("trigger", "boom", "b1", "--wait", "--poll", "0.1", **topic.env())

    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines()[-1] == "finished: boom/b1 FAILED"


def test_trigger_wait_reports_the_routers_rejection(
    run: Run, db: Engine, router: Router, publisher: InMemoryPublisher, topic: Topic
) -> None:
    """--no-check publishes a start for a pipeline the router does not know: the router
    rejects it, and the waiting command finds that rejection and prints its reason."""
    with RouterStandIn(topic, router, publisher) as stand_in:
        result = run(
            "trigger", "etll", "2024-03", "--no-check", "--wait", "--poll", "0.1", "--timeout",
            "60", **topic.env(),
        )  # fmt: skip

    assert stand_in.outcomes == ["rejected"]
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        "error: the router rejected start_batch etll/2024-03: unknown pipeline 'etll' "
        "(it has no tasks)\n"
    )
    assert rejected_rows(db) == ["unknown pipeline 'etll' (it has no tasks)"]


# -- dagrelay rejected ---------------------------------------------------------------------------


def reject(router: Router, data: bytes | str, message_id: str, **attributes: str) -> None:
    encoded = data if isinstance(data, str) else base64.b64encode(data).decode()
    assert router.handle(Envelope(encoded, attributes, message_id)) == "rejected"


@pytest.fixture
def three_rejections(router: Router, clock: FakeClock) -> None:
    reject(router, json.dumps({"action": "start_batch", "pipeline": "etll",
                               "batch_id": "b1"}).encode(), "m1")  # fmt: skip
    clock.advance(3600)
    reject(router, b"\x1b[2Jnot json\x00", "m2")
    clock.advance(60)
    reject(router, "%%% not base64 %%%", "m3", action="run_task")


@pytest.mark.usefixtures("three_rejections")
def test_rejected_lists_them_decoded_newest_first(run: Run) -> None:
    result = run("rejected", "--json")

    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["rejected"]
    assert [r["message_id"] for r in found] == ["m3", "m2", "m1"]
    assert [r["data_kind"] for r in found] == ["not-base64", "text", "json"]
    assert found[2]["data"] == '{"action": "start_batch", "pipeline": "etll", "batch_id": "b1"}'
    assert found[2]["action"] == "start_batch"
    assert found[2]["reason"] == "unknown pipeline 'etll' (it has no tasks)"
    assert found[1]["data"] == "\\x1b[2Jnot json\\x00"  # the escape sequence is not obeyed
    assert found[1]["reason"].startswith("message data is not JSON we accept")
    assert found[0]["action"] == "run_task"  # from the attribute


@pytest.mark.usefixtures("three_rejections")
def test_rejected_filters(run: Run) -> None:
    starts = run("rejected", "--action", "start_batch", "--json")
    latest = run("rejected", "--limit", "1", "--json")
    table = run("rejected", "--action", "start_batch")

    assert [r["message_id"] for r in json.loads(starts.stdout)["rejected"]] == ["m1"]
    assert [r["message_id"] for r in json.loads(latest.stdout)["rejected"]] == ["m3"]
    assert "unknown pipeline 'etll' (it has no tasks)" in table.stdout
    assert '"pipeline": "etll"' in table.stdout


def test_rejected_since(run: Run, router: Router) -> None:
    reject(router, b"{}", "old")  # the fake clock's time: 2024-03-01, long ago

    recent = run("rejected", "--since", "1h")
    everything = run("rejected", "--since", "2024-02-29T00:00Z", "--json")
    bad = run("rejected", "--since", "yesterday")

    assert recent.exit_code == 0
    assert recent.stdout.startswith("no rejected messages since ")
    assert [r["message_id"] for r in json.loads(everything.stdout)["rejected"]] == ["old"]
    assert (bad.exit_code, bad.stderr) == (
        2,
        "error: --since 'yesterday' is neither an age (30m, 2h, 7d) nor an ISO 8601 time\n",
    )


# -- an error text carries no stack frames -------------------------------------------------------


def test_a_task_error_is_type_and_message_its_traceback_kept_apart(
    run: Run,
    db: Engine,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: object,
) -> None:
    insert_pipeline(  # type: ignore[operator]
        "boom", {"a": []}, handlers={"a": "python.fail"},
        params={"a": '{"message": "disk on fire", "retryable": false}'},
    )  # fmt: skip
    engine.start_batch(StartBatch("boom", "b1"))
    drive(engine, publisher)

    with db.connect() as conn:
        error = conn.execute(text("SELECT error FROM task_log")).scalar_one()
        trace = conn.execute(text("SELECT traceback FROM task_attempts")).scalar_one()
    status = run("status", "b1")

    assert error == "non-retryable NonRetryableError: disk on fire"
    assert trace.startswith("Traceback (most recent call last):")
    assert "builtin.py" in trace
    assert "disk on fire" in status.stdout
    assert "[at " not in status.stdout


# -- cancel says exactly what happened; resume runs what it stopped -------------------------------


def test_cancel_then_resume_from_the_cli(
    run: Run,
    db: Engine,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: object,
    topic: Topic,
) -> None:
    insert_pipeline("p", {"b": ["a"], "c": ["b"]})  # type: ignore[operator]
    engine.start_batch(StartBatch("p", "b1"))  # a is NEW; b and c not created yet

    cancelled = run("cancel", "b1", "--pipeline", "p", **topic.env())
    running = run("resume", "b1", "--pipeline", "nope", **topic.env())
    resumed = run("resume", "b1", "--pipeline", "p", **topic.env())
    again = run("resume", "b1", "--pipeline", "p", **topic.env())

    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.stdout.startswith(
        "batch p/b1 is CANCELLED: 0 running tasks will finish; 1 waiting task cancelled; "
        "2 never-started tasks cancelled\n"
    )
    assert (running.exit_code, running.stderr) == (2, "error: no batch 'b1' in pipeline 'nope'\n")
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.startswith(
        "batch p/b1 resumed: 3 cancelled task rows reset, 1 started now"
    )
    assert again.exit_code == 2
    assert "is RUNNING, not CANCELLED: nothing to resume" in again.stderr
    ops.deliver(engine, publisher, topic.pull(1))  # a's run_task, as the router would
    assert batches(db, "p") == {"b1": "SUCCESS"}
