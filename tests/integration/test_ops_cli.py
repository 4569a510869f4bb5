"""The operator's commands (dagrelay.cli: backfill, rerun, status, ...) against a real database
and the Pub/Sub emulator.

What the CLI publishes goes to a topic of the test's own; the test pulls it from a
subscription and feeds it to the in-process ``engine`` fixture, as the router would."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.cloud import pubsub_v1
from sqlalchemy import Engine, text
from typer.testing import CliRunner, Result

from dagrelay import cli
from dagrelay.config import get_settings
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.messages import Envelope, Message, RunTask, StartBatch, parse
from dagrelay.pipelines.apply import ApplyResult
from dagrelay.pipelines.apply import apply as apply_pipeline
from dagrelay.pipelines.export import export_yaml
from dagrelay.pipelines.spec import load_pipeline
from dagrelay.store import reads
from dagrelay.store.db import get_engine
from dagrelay.store.outbox import InMemoryPublisher
from tests.dbtools import create_database, drop_database
from tests.integration.helpers import drive, scalar

pytestmark = pytest.mark.integration

PROJECT = "dagrelay-test"
MONTHLY_PROFIT = (
    Path(__file__).resolve().parents[1] / "fixtures" / "pipelines" / "monthly_profit.yaml"
)
Run = Callable[..., Result]
InsertPipeline = Callable[..., dict[str, int]]


def _reset() -> None:
    get_engine.cache_clear()
    get_settings.cache_clear()


@dataclass
class Topic:
    """The events topic of one test and a pull subscription on it."""

    topic_id: str
    subscription: str

    def env(self) -> dict[str, str]:
        return {"DAGRELAY_PROJECT_ID": PROJECT, "DAGRELAY_EVENTS_TOPIC": self.topic_id}

    def pull(self, count: int, timeout_s: float = 30) -> list[Message]:
        """Exactly ``count`` messages (acknowledged), parsed as the router parses them."""
        found: list[Message] = []
        with pubsub_v1.SubscriberClient() as subscriber:
            deadline = time.monotonic() + timeout_s
            while len(found) < count and time.monotonic() < deadline:
                response = subscriber.pull(
                    subscription=self.subscription, max_messages=count, timeout=5
                )
                if response.received_messages:
                    subscriber.acknowledge(
                        subscription=self.subscription,
                        ack_ids=[r.ack_id for r in response.received_messages],
                    )
                found += [_parse(r.message) for r in response.received_messages]
        assert len(found) == count, found
        return found

    def pull_now(self) -> list[Message]:
        """Whatever is there (possibly nothing)."""
        with pubsub_v1.SubscriberClient() as subscriber:
            response = subscriber.pull(subscription=self.subscription, max_messages=100, timeout=2)
            if response.received_messages:
                subscriber.acknowledge(
                    subscription=self.subscription,
                    ack_ids=[r.ack_id for r in response.received_messages],
                )
            return [_parse(r.message) for r in response.received_messages]


def _parse(message: pubsub_v1.types.PubsubMessage) -> Message:
    data = base64.b64encode(message.data).decode()
    return parse(Envelope(data, dict(message.attributes), message.message_id))


@pytest.fixture
def topic(pubsub_emulator: str, unique: str) -> Topic:
    publisher = pubsub_v1.PublisherClient()
    name = publisher.create_topic(name=publisher.topic_path(PROJECT, f"events-{unique}")).name
    with pubsub_v1.SubscriberClient() as subscriber:
        subscription = subscriber.subscription_path(PROJECT, f"ops-{unique}")
        subscriber.create_subscription(name=subscription, topic=name, ack_deadline_seconds=60)
    return Topic(f"events-{unique}", subscription)


@pytest.fixture
def run(db_url: str) -> Iterator[Run]:
    def invoke(*args: str, **env: str) -> Result:
        _reset()
        try:
            return CliRunner().invoke(
                cli.app, list(args), env={"DATABASE_URL": db_url, "COLUMNS": "200", **env}
            )
        finally:
            _reset()

    yield invoke
    _reset()


class Calls:
    """Counts the returns of a function the CLI calls (patched on its module), so a test can
    wait, with a deadline, until the CLI has looked at the database again."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> None:
        original = getattr(module, name)
        self.results: list[Any] = []
        self._changed = threading.Condition()

        def counted(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            with self._changed:
                self.results.append(result)
                self._changed.notify_all()
            return result

        monkeypatch.setattr(module, name, counted)

    def wait_beyond(self, count: int, timeout_s: float = 60) -> None:
        """Until more than ``count`` calls have returned."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.results) > count, timeout_s):
                raise AssertionError(f"the CLI made no call after call {count} in {timeout_s}s")


def apply_file(db: Engine, path: Path) -> ApplyResult:
    with db.begin() as conn:
        return apply_pipeline(conn, load_pipeline(path))


def batches(db: Engine, pipeline: str) -> dict[str, str]:
    with db.connect() as conn:
        rows = conn.execute(
            text("SELECT batch_id, status::text FROM batches WHERE pipeline = :p"),
            {"p": pipeline},
        ).all()
    return dict(rows)


def deliver(engine: DagEngine, publisher: InMemoryPublisher, messages: list[Message]) -> None:
    """What the router does with the pulled messages, then drive the batches to the end."""
    for message in messages:
        if isinstance(message, StartBatch):
            engine.start_batch(message)
        else:
            assert isinstance(message, RunTask), message
            engine.run_task(message)
        drive(engine, publisher)


def failing_diamond(
    insert_pipeline: InsertPipeline, engine: DagEngine, p: InMemoryPublisher
) -> None:
    """a -> b, c -> d; b fails for good, so d is UPSTREAM_FAILED."""
    insert_pipeline(
        "dia",
        {"b": ["a"], "c": ["a"], "d": ["b", "c"]},
        handlers={"b": "python.fail"},
        params={"b": '{"message": "disk on fire", "retryable": false}'},
    )
    engine.start_batch(StartBatch("dia", "b1"))
    drive(engine, p)


def fix(db: Engine, task: str) -> None:
    with db.begin() as conn:
        conn.execute(
            text("UPDATE tasks SET handler = 'python.noop', params = '{}' WHERE name = :n"),
            {"n": task},
        )


# -- validate ------------------------------------------------------------------------------------


def test_validate_files(run: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "pipeline: p\ntasks:\n"
        "  - {name: a, handler: python.sleep, params: {seconds: -1}, parents: [b]}\n"
        "  - {name: b, handler: nope, parents: [a]}\n",
        encoding="utf-8",
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("pipeline: p\n", encoding="utf-8")

    good = run("validate", str(MONTHLY_PROFIT))
    result = run("validate", str(MONTHLY_PROFIT), str(bad), str(broken))

    assert (good.exit_code, good.stdout) == (
        0,
        "monthly_profit.yaml: pipeline monthly_profit is valid (3 tasks)\n",
    )
    assert result.exit_code == 2
    assert result.stdout == good.stdout
    problems = result.stderr.splitlines()
    assert problems[:1] == ["error: broken.yaml: (top level): 'tasks' is a required property"]
    assert problems[1].startswith("error: bad.yaml: task 'b': unknown handler 'nope' (register")
    assert "error: bad.yaml: cycle: a -> b -> a" in problems
    assert any(p.startswith("error: bad.yaml: ") and "-1" in p for p in problems), problems


def test_validate_the_database(run: Run, db: Engine, insert_pipeline: InsertPipeline) -> None:
    apply_file(db, MONTHLY_PROFIT)
    empty = run("validate")
    insert_pipeline("q", {"q.b": ["q.a"]}, handlers={"q.a": "python.sleep", "q.b": "gone.handler"})

    result = run("validate")

    assert (empty.exit_code, empty.stdout) == (
        0,
        "database:monthly_profit: pipeline monthly_profit is valid (3 tasks)\n",
    )
    assert result.exit_code == 2, result.output
    assert result.stdout == empty.stdout
    lines = result.stderr.splitlines()
    prefix = "error: database:q: task 'q.b': unknown handler 'gone.handler' ("
    assert any(line.startswith(prefix) for line in lines), lines
    assert any(line.startswith("error: database:q: ") and "seconds" in line for line in lines)


# -- export --------------------------------------------------------------------------------------

RICH_PIPELINE = """\
pipeline: exported
description: stored and exported
tasks:
  - name: ex.report
    handler: python.noop
    parents: [ex.load_b, ex.load_a]
    trigger_rule: all_done
    params: {output: {when: "{date}", rows: [3, 1.5, null, "2024-03-01"], ok: true}}
  - name: ex.load_b
    handler: python.sleep
    params: {seconds: 0}
    max_retries: 3
    retry_delay_s: 5
    retry_backoff: 3
    retry_max_delay_s: 60
    timeout_s: 120
    pool: bigquery
  - name: ex.load_a
    description: the first load
    handler: python.noop
    enabled: false
"""


def test_export_round_trip_is_exact(run: Run, db: Engine, tmp_path: Path, template_db: str) -> None:
    source = tmp_path / "exported.yaml"
    source.write_text(RICH_PIPELINE, encoding="utf-8")
    apply_file(db, source)

    exported = run("pipeline", "export", "exported")

    assert exported.exit_code == 0, exported.output
    normalised = export_yaml(load_pipeline(source))
    assert exported.stdout == normalised
    assert exported.stdout.index("ex.load_a") < exported.stdout.index("ex.load_b")
    assert "description: stored and exported\n" in exported.stdout  # the pipeline's
    assert "  description: the first load\n" in exported.stdout  # a task's
    out = tmp_path / "out.yaml"
    written = run("pipeline", "export", "exported", "-o", str(out))
    assert written.stdout == f"wrote {out} (pipeline exported, 3 tasks)\n"
    assert out.read_text(encoding="utf-8") == exported.stdout
    assert apply_file(db, out).changes == 0  # the export reproduces the rows exactly

    fresh = f"dagrelay_t_{uuid.uuid4().hex[:12]}"
    url = create_database(fresh, template=template_db)
    try:
        applied = run("pipeline", "apply", str(out), DATABASE_URL=url)
        again = run("pipeline", "export", "exported", DATABASE_URL=url)
    finally:
        drop_database(fresh)
    assert applied.exit_code == 0, applied.output
    assert again.stdout == exported.stdout


def test_export_of_an_unknown_pipeline(run: Run) -> None:
    result = run("pipeline", "export", "nope")
    assert (result.exit_code, result.stderr) == (
        2,
        "error: no pipeline 'nope' in the database (it has no tasks)\n",
    )


# -- backfill ------------------------------------------------------------------------------------

WEEK = ("--from", "2024-03-01", "--to", "2024-03-07")


@pytest.fixture
def one_day_done(db: Engine, engine: DagEngine, publisher: InMemoryPublisher) -> None:
    """monthly_profit applied, and its batch of 2024-03-03 has succeeded."""
    apply_file(db, MONTHLY_PROFIT)
    engine.start_batch(StartBatch("monthly_profit", "2024-03-03"))
    drive(engine, publisher)
    assert batches(db, "monthly_profit") == {"2024-03-03": "SUCCESS"}


@pytest.mark.usefixtures("one_day_done")
def test_backfill_dry_run_prints_the_plan(run: Run, db: Engine) -> None:
    result = run("backfill", "monthly_profit", *WEEK, "--dry-run")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    (skipped,) = [line for line in lines if "2024-03-03" in line]
    assert "SUCCESS" in skipped
    assert "skip" in skipped
    assert sum(" start " in line for line in lines) == 6
    assert lines[-1] == "dry run: 6 of 7 days would run; nothing started"
    assert batches(db, "monthly_profit") == {"2024-03-03": "SUCCESS"}


@pytest.mark.usefixtures("one_day_done")
def test_backfill_publishes_a_start_for_each_missing_day(
    run: Run, db: Engine, engine: DagEngine, publisher: InMemoryPublisher, topic: Topic
) -> None:
    result = run("backfill", "monthly_profit", *WEEK, **topic.env())

    assert result.exit_code == 0, result.output
    messages = topic.pull(6)
    assert topic.pull_now() == []
    starts = sorted((m for m in messages if isinstance(m, StartBatch)), key=lambda m: m.batch_id)
    assert [m.batch_id for m in starts] == [f"2024-03-0{d}" for d in (1, 2, 4, 5, 6, 7)]
    assert starts[0].pipeline == "monthly_profit"
    assert starts[0].params == {"date": "2024-03-01", "ds": "2024-03-01", "ds_nodash": "20240301"}

    deliver(engine, publisher, messages)

    assert batches(db, "monthly_profit") == {f"2024-03-0{d}": "SUCCESS" for d in range(1, 8)}
    again = run("backfill", "monthly_profit", *WEEK, **topic.env())
    assert again.exit_code == 0, again.output
    assert topic.pull_now() == []


@pytest.mark.usefixtures("one_day_done")
def test_backfill_keeps_at_most_n_batches_running(
    run: Run,
    db: Engine,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    topic: Topic,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A router stand-in waits until the CLI has looked at its batches again after publishing
    (so whatever it launched in that round is on the topic), takes it all and runs it: the CLI
    never has more than 2 batches in flight."""
    polls = Calls(monkeypatch, reads, "batch_statuses")
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def router() -> None:
        handled = 0
        try:
            while handled < 6 and not done.is_set():
                polls.wait_beyond(len(polls.results))
                messages = topic.pull_now()
                if messages:
                    seen.append(len(messages))
                    deliver(engine, publisher, messages)
                    handled += len(messages)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
            raise

    thread = threading.Thread(target=router)
    thread.start()
    try:
        result = run(
            "backfill",
            "monthly_profit",
            *WEEK,
            "--max-concurrent",
            "2",
            "--wait",
            "--poll",
            "0.1",
            "--timeout",
            "120",
            **topic.env(),
        )
    finally:
        done.set()
        thread.join(60)

    assert errors == []
    assert result.exit_code == 0, result.output
    assert sum(seen) == 6
    assert max(seen) <= 2, seen
    assert batches(db, "monthly_profit") == {f"2024-03-0{d}": "SUCCESS" for d in range(1, 8)}


def test_backfill_reprocess_failed_reruns_the_failed_task(
    run: Run,
    db: Engine,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: InsertPipeline,
    topic: Topic,
) -> None:
    insert_pipeline(
        "dia",
        {"b": ["a"], "c": ["a"], "d": ["b", "c"]},
        handlers={"b": "python.fail"},
        params={"b": '{"message": "disk on fire", "retryable": false}'},
    )
    engine.start_batch(StartBatch("dia", "2024-03-01"))
    drive(engine, publisher)
    assert batches(db, "dia") == {"2024-03-01": "FAILED"}
    fix(db, "b")

    skipped = run("backfill", "dia", "--from", "2024-03-01", "--to", "2024-03-01", **topic.env())
    redone = run(
        "backfill",
        "dia",
        "--from",
        "2024-03-01",
        "--to",
        "2024-03-01",
        "--reprocess",
        "failed",
        "--latest",
        **topic.env(),
    )

    assert skipped.exit_code == 0, skipped.output
    assert redone.exit_code == 0, redone.output
    (message,) = topic.pull(1)
    assert message == RunTask(batch_id="2024-03-01", task="b", pipeline="dia")
    deliver(engine, publisher, [message])
    assert batches(db, "dia") == {"2024-03-01": "SUCCESS"}


def test_backfill_of_an_unknown_pipeline(run: Run) -> None:
    result = run("backfill", "nope", *WEEK, "--dry-run")
    assert (result.exit_code, result.stderr) == (
        2,
        "error: no pipeline 'nope' in the database (it has no tasks)\n",
    )


# -- rerun / history / cancel --------------------------------------------------------------------


def test_rerun_after_a_fix_resumes_the_batch(
    run: Run,
    db: Engine,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: InsertPipeline,
    topic: Topic,
) -> None:
    failing_diamond(insert_pipeline, engine, publisher)
    fix(db, "b")

    result = run("rerun", "b1", "b", "--downstream", "--latest", "--pipeline", "dia", **topic.env())

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "2 task rows reset; batch dia/b1 is RUNNING again"
    assert "UPSTREAM_FAILED" in result.stdout
    (message,) = topic.pull(1)
    assert message == RunTask(batch_id="b1", task="b", pipeline="dia")
    deliver(engine, publisher, [message])
    assert batches(db, "dia") == {"b1": "SUCCESS"}

    history = run("history", "b1", "b")
    assert history.exit_code == 0, history.output
    rows = [line for line in history.stdout.splitlines() if "│ test " in line]
    assert len(rows) == 2, history.stdout
    assert "ERROR (rerun)" in rows[0]
    assert "disk on fire" in rows[0]
    assert "SUCCESS" in rows[1]
    assert "b in batch b1 (now SUCCESS)" in history.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ["b1", "nope"],
            "error: no batch 'b1' with a task 'nope' in pipeline 'dia'\n",
            id="unknown",
        ),
        pytest.param(
            ["b1", "b", "--pipeline", "other"],
            "error: no batch 'b1' with a task 'b' in pipeline 'other'\n",
            id="wrong pipeline",
        ),
    ],
)
def test_rerun_refused(
    run: Run,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: InsertPipeline,
    topic: Topic,
    args: list[str],
    expected: str,
) -> None:
    failing_diamond(insert_pipeline, engine, publisher)
    result = run("rerun", *args, **topic.env())
    assert (result.exit_code, result.stderr) == (2, expected)


def test_rerun_of_a_cancelling_batch_is_refused_naming_its_status(
    run: Run,
    db: Engine,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: InsertPipeline,
    topic: Topic,
) -> None:
    failing_diamond(insert_pipeline, engine, publisher)
    with db.begin() as conn:  # as if an attempt still ran when it was cancelled
        conn.execute(text("UPDATE batches SET status = 'CANCELLING' WHERE batch_id = 'b1'"))
    result = run("rerun", "b1", "b", "--downstream", **topic.env())
    assert result.exit_code == 2
    assert "error: batch dia/b1 is CANCELLING: a rerun now would undo the cancel" in result.stderr
    assert scalar(db, "SELECT status::text FROM batches WHERE batch_id = 'b1'") == "CANCELLING"


def test_history_of_a_task_that_never_ran(
    run: Run, engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline
) -> None:
    failing_diamond(insert_pipeline, engine, publisher)

    never = run("history", "b1", "d")
    unknown = run("history", "b1", "nope")

    assert (never.exit_code, never.stdout) == (
        0,
        "d in b1: UPSTREAM_FAILED, no attempts (upstream: b failed)\n",
    )
    assert unknown.exit_code == 1
    assert unknown.stderr == "error: task 'nope' has no row and no attempts in batch 'b1'\n"


def test_cancel(
    run: Run, db: Engine, engine: DagEngine, insert_pipeline: InsertPipeline, topic: Topic
) -> None:
    insert_pipeline("p", {"y": ["x"]})
    engine.start_batch(StartBatch("p", "b1"))  # x is NEW, nobody runs it

    first = run("cancel", "b1", "--pipeline", "p", **topic.env())
    second = run("cancel", "b1", "--pipeline", "p", **topic.env())
    missing = run("cancel", "b2", "--pipeline", "p", **topic.env())

    assert first.exit_code == 0, first.output
    assert first.stdout.startswith(
        "batch p/b1 is CANCELLED: 0 running tasks will finish; 1 waiting task cancelled; "
        "1 never-started task cancelled\n"
    )
    assert "p / b1  CANCELLED" in first.stdout
    assert second.stdout.startswith("batch p/b1 is CANCELLED: nothing to cancel\n")
    assert (missing.exit_code, missing.stderr) == (1, "error: no batch 'b2' in pipeline 'p'\n")
    assert batches(db, "p") == {"b1": "CANCELLED"}


# -- explain -------------------------------------------------------------------------------------


def test_explain_a_diamond_with_one_failure(
    run: Run,
    db: Engine,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: InsertPipeline,
) -> None:
    failing_diamond(insert_pipeline, engine, publisher)
    with db.connect() as conn:
        error = conn.execute(
            text("SELECT error FROM task_log JOIN tasks USING (task_id) WHERE name = 'b'")
        ).scalar_one()
    assert error.startswith("non-retryable NonRetryableError: disk on fire")

    result = run("explain", "b1")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"dia / b1  FAILED  version 1\n└── b ERROR after 1 attempt: {error}\n"
        "    └── d UPSTREAM_FAILED\n"
    )


def test_explain_a_batch_that_did_not_fail(
    run: Run, db: Engine, engine: DagEngine, publisher: InMemoryPublisher
) -> None:
    apply_file(db, MONTHLY_PROFIT)
    engine.start_batch(StartBatch("monthly_profit", "2024-03"))
    drive(engine, publisher)

    result = run("explain", "2024-03")
    missing = run("explain", "nope")

    assert (result.exit_code, result.stdout) == (
        0,
        "monthly_profit / 2024-03  SUCCESS  version 1\n└── nothing failed\n",
    )
    assert (missing.exit_code, missing.stderr) == (1, "error: no batch 'nope'\n")


# -- status --------------------------------------------------------------------------------------


def test_status_lists_recent_batches(
    run: Run,
    db: Engine,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: InsertPipeline,
) -> None:
    failing_diamond(insert_pipeline, engine, publisher)
    apply_file(db, MONTHLY_PROFIT)
    engine.start_batch(StartBatch("monthly_profit", "2024-03", start_task="load_sales"))
    drive(engine, publisher)

    result = run("status")
    only = run("status", "--pipeline", "dia")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    (dia,) = [line for line in lines if "dia" in line]
    (monthly,) = [line for line in lines if "monthly_profit" in line]
    assert "FAILED" in dia
    assert "4/4" in dia
    assert "2/2" in monthly  # its scope: load_sales and calculate_profit
    assert "monthly_profit" not in only.stdout


def test_status_wait_returns_when_the_batch_finishes(
    run: Run,
    db: Engine,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch finishes only after the CLI has seen it RUNNING: --wait really waited."""
    apply_file(db, MONTHLY_PROFIT)
    engine.start_batch(StartBatch("monthly_profit", "2024-03"))
    looks = Calls(monkeypatch, reads, "read_batches")

    def finish() -> None:
        looks.wait_beyond(0)
        drive(engine, publisher)

    thread = threading.Thread(target=finish)
    thread.start()
    result = run("status", "2024-03", "--wait", "--poll", "0.1", "--timeout", "60")
    thread.join(30)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "finished: monthly_profit/2024-03 SUCCESS"
    assert looks.results[0][0]["status"] == "RUNNING"


def test_status_wait_exit_codes(
    run: Run, engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline
) -> None:
    failing_diamond(insert_pipeline, engine, publisher)
    insert_pipeline("p", {"y": ["x"]})
    engine.start_batch(StartBatch("p", "b2"))  # stays RUNNING: nobody runs x

    failed = run("status", "b1", "--wait", "--poll", "0.1")
    stuck = run("status", "b2", "--wait", "--poll", "0.1", "--timeout", "0.3")

    assert failed.exit_code == 1
    assert failed.stdout.splitlines()[-1] == "finished: dia/b1 FAILED"
    assert stuck.exit_code == 1
    assert stuck.stderr == "error: batch 'b2' is still RUNNING after the timeout\n"


def test_help_lists_the_operator_commands(run: Run) -> None:
    result = run("--help")
    for command in ("validate", "backfill", "rerun", "cancel", "history", "explain", "status"):
        assert command in result.stdout


# -- batch ids shared by pipelines, versions -----------------------------------------------------


@pytest.fixture
def two_pipelines(
    engine: DagEngine, publisher: InMemoryPublisher, insert_pipeline: InsertPipeline
) -> None:
    """dia (b fails) and ok (the same task names, all succeed), each with a batch b1."""
    failing_diamond(insert_pipeline, engine, publisher)
    insert_pipeline("ok", {"b": ["a"], "c": ["a"], "d": ["b", "c"]})
    engine.start_batch(StartBatch("ok", "b1"))
    drive(engine, publisher)


@pytest.mark.usefixtures("two_pipelines")
@pytest.mark.parametrize(
    "verb",
    [
        ["status", "b1"],
        ["explain", "b1"],
        ["history", "b1", "b"],
        ["rerun", "b1", "b"],
        ["cancel", "b1"],
    ],
)
def test_an_ambiguous_batch_id_is_refused_naming_the_pipelines(
    run: Run, db: Engine, topic: Topic, verb: list[str]
) -> None:
    result = run(*verb, **topic.env())

    assert (result.exit_code, result.stderr) == (
        2,
        "error: batch 'b1' exists in pipelines dia, ok: say which one with --pipeline\n",
    )
    assert batches(db, "dia") == {"b1": "FAILED"}  # nothing was done to either batch
    assert batches(db, "ok") == {"b1": "SUCCESS"}
    assert topic.pull_now() == []


@pytest.mark.usefixtures("two_pipelines")
def test_every_verb_picks_the_pipeline_it_is_given(run: Run, db: Engine, topic: Topic) -> None:
    ok = run("status", "b1", "--pipeline", "ok")
    dia = run("explain", "b1", "--pipeline", "dia")
    history = run("history", "b1", "b", "--pipeline", "ok")
    rerun = run("rerun", "b1", "b", "--pipeline", "ok", **topic.env())

    assert ok.exit_code == 0, ok.output
    assert "ok / b1  SUCCESS  version 1" in ok.stdout
    assert "dia / b1" not in ok.stdout
    assert dia.stdout.startswith("dia / b1  FAILED  version 1\n└── b ERROR")
    assert "b in batch b1 (now SUCCESS)" in history.stdout
    assert rerun.stdout.splitlines()[-1] == "1 task rows reset; batch ok/b1 is RUNNING again"
    assert topic.pull(1) == [RunTask(batch_id="b1", task="b", pipeline="ok")]
    assert batches(db, "dia") == {"b1": "FAILED"}


def test_pipeline_history_and_diff(
    run: Run,
    db: Engine,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: InsertPipeline,
) -> None:
    failing_diamond(insert_pipeline, engine, publisher)
    fix(db, "b")
    with db.begin() as conn:
        conn.execute(text("DELETE FROM tasks WHERE name = 'c'"))
    engine.start_batch(StartBatch("dia", "b2"))
    engine.start_batch(StartBatch("dia", "b3"))

    history = run("pipeline", "history", "dia")
    diff = run("pipeline", "diff", "dia", "1", "2")
    missing = run("pipeline", "diff", "dia", "1", "9")

    assert history.exit_code == 0, history.output
    lines = [line for line in history.stdout.splitlines() if line.startswith("│ ")]
    assert [line.split("│")[1].strip() for line in lines] == ["1", "2"]
    assert "b1" in lines[0]
    assert "b2, b3" in lines[1]
    assert diff.stdout.splitlines() == [
        "- task c",
        '~ task b: handler "python.fail" -> "python.noop"',
        '~ task b: params {"message": "disk on fire", "retryable": false} -> {}',
        "- edge a -> c",
        "- edge c -> d",
    ]
    assert (missing.exit_code, missing.stderr) == (1, "error: pipeline 'dia' has no version 9\n")


def test_backfill_reports_a_refused_rerun_and_goes_on(
    run: Run,
    db: Engine,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    insert_pipeline: InsertPipeline,
    topic: Topic,
) -> None:
    """Was: the first refused rerun stopped the backfill (and the days after it)."""
    insert_pipeline(
        "dia",
        {"b": ["a"], "c": ["a"]},
        handlers={"b": "python.fail", "c": "python.fail"},
        params={"b": '{"message": "no"}', "c": '{"message": "no"}'},
    )
    for day in ("2024-03-01", "2024-03-02"):
        engine.start_batch(StartBatch("dia", day))
    drive(engine, publisher)
    fix(db, "b")
    fix(db, "c")
    with db.begin() as conn:  # day 1 moves only if c is rerun: make c not rerun there
        conn.execute(
            text(
                "UPDATE task_log SET status = 'SUCCESS' WHERE batch_id = '2024-03-01' "
                "AND task_id = (SELECT task_id FROM tasks WHERE name = 'c')"
            )
        )
    result = run(
        "backfill", "dia", "--from", "2024-03-01", "--to", "2024-03-02",
        "--reprocess", "failed", "--latest", **topic.env(),
    )  # fmt: skip

    assert result.exit_code == 1, result.output
    assert "dia/2024-03-01: rerun refused: cannot move batch dia/2024-03-01" in result.stderr
    assert "task 'c' changed in version 2 but is not rerun" in result.stderr
    messages = topic.pull(2)
    assert {(m.batch_id, m.task) for m in messages if isinstance(m, RunTask)} == {
        ("2024-03-02", "b"),
        ("2024-03-02", "c"),
    }
