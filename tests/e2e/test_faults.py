"""Fault injection against the whole local stack: real PostgreSQL, the real Pub/Sub emulator,
the router under functions-framework (or pull workers). Each test starts its own stack on a
database cloned from the template, injects one fault while a batch runs, and checks that

* the batch ends in the expected state,
* every successful attempt's side effect happened exactly once (the ``effects`` table written
  by tests/e2e/faults_helpers.py from inside the router), and no attempt's effect twice,
* no child was created twice: one task_log row per task, fan-in counters equal to the number
  of parents, exactly one creating run_task outbox row per task.

A summary table (fault, runs, outcome, anything lost or doubled) is written to
test-artifacts/fault-results.json and printed at the end of the module.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import pubsub_v1
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from dagrelay.local import crashes
from dagrelay.local.processes import wait_for
from dagrelay.local.stack import Stack, StackConfig, StackInfo
from tests.dbtools import admin_engine, create_database, drop_database
from tests.e2e import faults_helpers as fh
from tests.e2e.faults_helpers import Duplicator, Tally, tally
from tests.paths import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.long_pole(90)]

PROJECT = "dagrelay-test"
RESULTS_FILE = ROOT / "test-artifacts" / "fault-results.json"
RESULTS: list[dict[str, Any]] = []

Task = tuple[str, dict[str, Any]]  # (handler, params)
RECORD: Task = ("python.call", {"callable": fh.RECORD})


def sleep_record(seconds: float) -> Task:
    return ("python.call", {"callable": fh.SLEEP_THEN_RECORD, "kwargs": {"seconds": seconds}})


# -- the stack of one test -----------------------------------------------------------------------


@dataclass
class FaultStack:
    stack: Stack
    info: StackInfo
    db: Engine
    db_name: str
    started: float = field(default_factory=time.monotonic)

    def define(
        self,
        pipeline: str,
        tasks: Mapping[str, Task],
        parents: Mapping[str, Sequence[str]],
        *,
        max_retries: int = 3,
        retry_delay_s: int = 1,
        timeout_s: int = 3,
    ) -> None:
        """INSERT the tasks and edges with plain SQL, then give them a fault-friendly policy
        (few seconds of lease, one second of retry delay)."""
        with self.db.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO tasks (name, pipeline, handler, params) "
                    "VALUES (:n, :p, :h, CAST(:params AS jsonb))"
                ),
                [
                    {"n": n, "p": pipeline, "h": h, "params": json.dumps(params)}
                    for n, (h, params) in tasks.items()
                ],
            )
            edges = [{"c": c, "p": p} for c, ps in parents.items() for p in ps]
            if edges:
                conn.execute(
                    text(
                        "INSERT INTO task_dependencies (child_task_id, parent_task_id) "
                        "SELECT c.task_id, p.task_id FROM tasks c, tasks p "
                        "WHERE c.name = :c AND p.name = :p"
                    ),
                    edges,
                )
            conn.execute(
                text(
                    "UPDATE tasks SET max_retries = :r, retry_delay_s = :d, timeout_s = :t "
                    "WHERE pipeline = :p"
                ),
                {"r": max_retries, "d": retry_delay_s, "t": timeout_s, "p": pipeline},
            )

    def publish(self, message: dict[str, Any], times: int = 1, **attributes: str) -> None:
        client = pubsub_v1.PublisherClient()
        topic = client.topic_path(self.info.project_id, self.info.events_topic)
        data = json.dumps(message).encode()
        futures = [
            client.publish(topic, data, action=str(message["action"]), **attributes)
            for _ in range(times)
        ]
        for future in futures:
            future.result(timeout=30)

    def start_batch(self, pipeline: str, batch_id: str, times: int = 1) -> None:
        self.started = time.monotonic()
        self.publish(
            {"action": "start_batch", "pipeline": pipeline, "batch_id": batch_id}, times=times
        )

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.db.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def wait_batch(self, pipeline: str, batch_id: str, timeout_s: float = 60) -> str:
        status: list[str] = []

        def done() -> bool:
            self.stack.check_alive()
            status[:] = [
                self.scalar(
                    "SELECT status::text FROM batches WHERE pipeline = :p AND batch_id = :b",
                    p=pipeline,
                    b=batch_id,
                )
                or "MISSING"
            ]
            return status[0] not in ("RUNNING", "MISSING")

        wait_for(done, timeout_s, f"batch {pipeline}/{batch_id} to end", poll_s=0.1)
        return status[0]

    def router_log(self) -> str:
        """The router's (functions-framework and gunicorn) log, plus the workers' logs."""
        logs = sorted(Path(self.info.log_dir).glob("router-*.log"))
        logs += sorted(Path(self.info.log_dir).glob("worker-*.log"))
        return "\n".join(p.read_text(errors="replace") for p in logs)

    def log_events(self, message: str) -> list[dict[str, Any]]:
        """The router's JSON log lines whose message starts with ``message``."""
        events = []
        for line in self.router_log().splitlines():
            if line.startswith("{") and message in line:
                with suppress(ValueError):
                    event = json.loads(line)
                    if str(event.get("message", "")).startswith(message):
                        events.append(event)
        return events


@pytest.fixture
def fault_stack(
    template_db: str, pubsub_emulator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., FaultStack]]:
    """Start a stack of this test's own: ``fault_stack(own_emulator=..., **StackConfig)``.
    The session's emulator is shared (unique topics; subscriptions deleted afterwards) unless
    the test restarts the emulator."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator)  # Stack.start() overwrites it
    started: list[FaultStack] = []
    unique = uuid.uuid4().hex[:8]

    def start(
        *, own_emulator: bool = False, router_env: dict[str, str] | None = None, **config: Any
    ) -> FaultStack:
        db_name = f"dagrelay_fault_{unique}"
        url = create_database(db_name, template=template_db)
        # No pool: a connection killed by pg_terminate_backend is never handed to the test
        # again (pg8000 may raise a bare ConnectionResetError that pool_pre_ping lets through).
        db = create_engine(url, poolclass=NullPool)
        with db.begin() as conn:
            conn.execute(text(fh.EFFECTS_DDL))
        defaults: dict[str, Any] = {
            "sweep_interval_s": 1.0,
            "sweep_older_than_s": 2,
            "data_services": False,  # python handlers only: no GCS or BigQuery to start
            "functions": ("router",),  # no test of a stack of its own opens the dashboard
        }
        stack = Stack(
            StackConfig(
                database_url=url,
                project_id=PROJECT,
                events_topic=f"ev-{unique}",
                subscription=f"ev-{unique}-router",
                alerts_topic=f"alerts-{unique}",
                dead_letter_topic=f"dead-{unique}",
                emulator_host=None if own_emulator else pubsub_emulator,
                workdir=tmp_path / "stack",
                router_env={"PYTHONPATH": str(ROOT), **(router_env or {})},
                **(defaults | config),
            )
        )
        fs = FaultStack(stack, stack.start(), db, db_name)
        started.append(fs)
        return fs

    yield start
    for fs in started:
        fs.stack.stop()
        if fs.stack.emulator is None:
            _delete_pubsub(fs.info)
        fs.db.dispose()
        drop_database(fs.db_name)


def _delete_pubsub(info: StackInfo) -> None:
    """Remove this test's topics and subscriptions from the shared emulator, so it does not
    keep pushing leftovers to a router that is gone."""
    subscriber = pubsub_v1.SubscriberClient()
    publisher = pubsub_v1.PublisherClient()
    try:
        for sub in subscriber.list_subscriptions(request={"project": f"projects/{PROJECT}"}):
            if any(t in sub.topic for t in (info.events_topic, info.dead_letter_topic)) or (
                sub.topic.endswith(f"/{info.alerts_topic}")
            ):
                with suppress(api_exceptions.NotFound):
                    subscriber.delete_subscription(request={"subscription": sub.name})
        for topic in (info.events_topic, info.dead_letter_topic, info.alerts_topic):
            with suppress(api_exceptions.NotFound):
                publisher.delete_topic(request={"topic": publisher.topic_path(PROJECT, topic)})
    finally:
        subscriber.close()


# -- the checks every test makes -----------------------------------------------------------------


def check(
    fs: FaultStack,
    fault: str,
    pipeline: str,
    batch_id: str,
    status: str,
    *,
    expected: str = "SUCCESS",
    note: str = "",
) -> Tally:
    """The common assertions, and the test's row in the results table."""
    seconds = round(time.monotonic() - fs.started, 1)
    result = tally(fs.db, pipeline, batch_id)
    lost, doubled = result.lost(), result.doubled()
    extra = result.effects_of_unsuccessful_attempts()
    RESULTS.append(
        {
            "fault": fault,
            "tasks": len(result.defined),
            "runs": result.runs,
            "run_task_messages": sum(result.messages.values()),
            "outcome": status,
            "lost": lost or "none",
            "doubled": doubled or "none",
            "effects_of_failed_attempts": [f"{t}#{a}" for t, a in extra] or "none",
            "seconds": seconds,
            "note": note,
        }
    )
    assert status == expected
    assert not lost, lost
    assert not doubled, doubled
    assert set(result.creating_messages) == set(result.defined)  # each task got its message
    for task, attempt in extra:  # an effect of an attempt that did not succeed: it failed
        outcomes = {a["attempt"]: a["outcome"] for a in result.attempts[task]}
        assert outcomes.get(attempt) == "RETRY", (task, attempt, outcomes)
    return result


@pytest.fixture(scope="module", autouse=True)
def fault_table(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not RESULTS:
        return
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(RESULTS, indent=2) + "\n")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():  # shown without -s
        reporter.write_line("")
        reporter.write_sep("-", f"fault injection ({RESULTS_FILE.relative_to(ROOT)})")
        reporter.write_line(
            f"{'fault':<34} {'runs':>5} {'msgs':>5} {'outcome':<8} {'secs':>5}  lost / doubled"
        )
        for r in RESULTS:
            lost, doubled = r["lost"], r["doubled"]
            reporter.write_line(
                f"{r['fault']:<34} {r['runs']:>5} {r['run_task_messages']:>5} "
                f"{r['outcome']:<8} {r['seconds']:>5}  {lost} / {doubled}"
            )


# -- 1. the process killed at each crash point ---------------------------------------------------

DIAMOND = {"k_a": [], "k_b": ["k_a"], "k_c": ["k_a"], "k_d": ["k_b", "k_c"], "k_e": ["k_d"]}


@pytest.mark.parametrize("point", ["after_claim", "in_handler", "after_handler", "after_commit"])
def test_process_killed_at_crash_point(
    fault_stack: Callable[..., FaultStack], tmp_path: Path, point: str
) -> None:
    markers = tmp_path / "markers"
    fs = fault_stack(
        router_env={
            crashes.POINTS_ENV: f"{point}:k_b",
            crashes.MARKER_DIR_ENV: str(markers),
        }
    )
    fs.define("crash", dict.fromkeys(DIAMOND, RECORD), DIAMOND)
    fs.start_batch("crash", "b1")

    status = fs.wait_batch("crash", "b1")

    assert (markers / f"{point}-k_b").exists()  # the crash point fired ...
    assert "exited with code 86" in fs.router_log()  # ... and killed the gunicorn worker
    kills = fs.router_log().count("exited with code 86")
    result = check(fs, f"killed at {point}", "crash", "b1", status, note=f"{kills} kill(s)")
    b_attempts = {a["attempt"]: a for a in result.attempts["k_b"]}
    if point == "after_commit":  # the result was committed: only its messages were delayed
        assert result.tasks["k_b"]["attempt"] == 1
    else:  # the killed attempt's lease expired; the sweeper retried it
        assert result.tasks["k_b"]["attempt"] == 2
        assert b_attempts[1]["outcome"] == "RETRY"
        assert "lease expired" in b_attempts[1]["error"]
    killed_effect = result.effects[("k_b", 1)]
    assert killed_effect == (1 if point in ("after_handler", "after_commit") else 0)


# -- 2. every message delivered 2-3 times, shuffled ----------------------------------------------


def test_every_message_delivered_two_or_three_times_shuffled(
    fault_stack: Callable[..., FaultStack],
) -> None:
    fs = fault_stack()
    parents = {
        "u_a": [],
        "u_b": ["u_a"],
        "u_c": ["u_a"],
        "u_d": ["u_a"],
        "u_e": ["u_b", "u_c", "u_d"],
        "u_f": ["u_e"],
        "u_g": ["u_a", "u_f"],
    }
    fs.define("dups", dict.fromkeys(parents, sleep_record(0.2)), parents)
    duplicator = Duplicator(fs.info, seed=20261121)
    duplicator.start()
    try:
        fs.start_batch("dups", "b1", times=2)  # the trigger itself twice
        status = fs.wait_batch("dups", "b1")
    finally:
        duplicator.stop()
    # Every run_task the router was sent, the copies included, has been handled (claimed or
    # ignored) before the effects are counted.
    sent = duplicator.seen + duplicator.copies

    def handled() -> bool:
        return len(fs.log_events("task claimed") + fs.log_events("run_task ignored")) >= sent

    wait_for(handled, 60, f"the router to handle {sent} run_task messages")
    started = len(fs.log_events("batch started"))
    assert started == 1
    assert len(fs.log_events("batch already exists")) == 1

    result = check(
        fs,
        "each message 2-3x, shuffled",
        "dups",
        "b1",
        status,
        note=f"{duplicator.seen} run_task + {duplicator.copies} copies; "
        f"{len(fs.log_events('run_task ignored'))} ignored",
    )
    assert duplicator.copies >= duplicator.seen >= len(parents)
    assert {r["attempt"] for r in result.tasks.values()} == {1}  # nothing ran twice
    assert sum(result.effects.values()) == len(parents)


# -- 3. the Pub/Sub emulator restarted mid-batch -------------------------------------------------


def test_emulator_restarted_mid_batch(fault_stack: Callable[..., FaultStack]) -> None:
    fs = fault_stack(own_emulator=True)
    wide = [f"r_w{i:02}" for i in range(16)]
    tasks: dict[str, Task] = {"r_root": RECORD, "r_slow": sleep_record(4), "r_sink": RECORD}
    tasks |= dict.fromkeys(wide, sleep_record(0.3))  # a slow branch and a wide one
    parents = {"r_root": [], "r_slow": ["r_root"], "r_sink": ["r_slow", *wide]}
    parents |= {key: ["r_root"] for key in wide}
    fs.define("restart", tasks, parents, timeout_s=30)
    fs.start_batch("restart", "b1")

    def mid_flight() -> bool:
        # The router takes two pushes at a time: the other NEW tasks' run_task messages wait
        # in the emulator, which is about to lose them.
        waiting = "SELECT count(*) FROM task_log WHERE batch_id = 'b1' AND status = 'NEW'"
        return int(fs.scalar(waiting)) >= 6

    wait_for(mid_flight, 30, "the batch to be mid-flight")
    waiting = fs.scalar("SELECT count(*) FROM task_log WHERE status = 'NEW'")
    fs.stack.restart_emulator()

    status = fs.wait_batch("restart", "b1", timeout_s=90)
    requeued = len(fs.log_events("requeued"))
    check(
        fs,
        "emulator restarted mid-batch",
        "restart",
        "b1",
        status,
        note=f"{waiting} tasks waiting at the restart; {requeued} requeue sweeps",
    )
    assert requeued >= 1  # lost messages were replaced by the sweeper


# -- 4. PostgreSQL connections killed mid-batch --------------------------------------------------


def test_database_connections_killed_mid_batch(fault_stack: Callable[..., FaultStack]) -> None:
    fs = fault_stack()
    middle = [f"p_m{i:02}" for i in range(24)]
    tasks: dict[str, Task] = {"p_root": RECORD, "p_sink": RECORD}
    tasks |= dict.fromkeys(middle, sleep_record(0.25))
    parents: dict[str, list[str]] = {"p_root": [], "p_sink": middle}
    parents |= {key: ["p_root"] for key in middle}
    fs.define("pgkill", tasks, parents)
    fs.start_batch("pgkill", "b1")

    killed = 0
    admin = admin_engine()
    try:
        for done in range(2, 24, 3):  # 8 rounds, each once the batch has moved on
            succeeded = "SELECT count(*) FROM task_log WHERE status = 'SUCCESS'"
            wait_for(lambda: int(fs.scalar(succeeded)) >= done, 60, f"{done} tasks to succeed")  # noqa: B023
            with admin.connect() as conn:
                killed += conn.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                        "FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"
                    ),
                    {"d": fs.db_name},
                ).scalar_one()
    finally:
        admin.dispose()

    status = fs.wait_batch("pgkill", "b1", timeout_s=90)
    transient = fs.router_log().count("transient database error")
    failed = fs.router_log().count("ERROR in app: Exception on")  # 500: Pub/Sub redelivers
    check(
        fs,
        "PostgreSQL connections killed x8",
        "pgkill",
        "b1",
        status,
        note=f"{killed} backends terminated; {transient} transient retries; "
        f"{failed} pushes failed and were redelivered",
    )
    assert killed >= 8


# -- 5. four router processes on a 200-wide fan-out / fan-in -------------------------------------


def test_four_workers_on_a_200_wide_fan_in(fault_stack: Callable[..., FaultStack]) -> None:
    # Pull workers; a sweep that requeues only messages lost for 30 s (none are here).
    fs = fault_stack(workers=4, sweep_older_than_s=30)
    middle = [f"w_m{i:03}" for i in range(200)]
    tasks: dict[str, Task] = {"w_root": RECORD, "w_sink": RECORD}
    tasks |= dict.fromkeys(middle, ("python.noop", {}))
    parents: dict[str, list[str]] = {"w_root": [], "w_sink": middle}
    parents |= {key: ["w_root"] for key in middle}
    fs.define("wide", tasks, parents)
    fs.start_batch("wide", "b1")

    status = fs.wait_batch("wide", "b1", timeout_s=120)
    wall = time.monotonic() - fs.started
    db_wall = fs.scalar(
        "SELECT extract(epoch FROM finished_at - created_at) FROM batches WHERE batch_id = 'b1'"
    )
    workers = fs.scalar("SELECT count(DISTINCT worker) FROM task_attempts")
    result = check(
        fs,
        "4 pull workers, 200-wide fan-in",
        "wide",
        "b1",
        status,
        note=f"wall {wall:.1f}s (batch {float(db_wall):.1f}s in the database); "
        f"{workers} workers ran tasks",
    )
    assert result.rows_per_task["w_sink"] == 1
    assert result.fanin["w_sink"] == {
        "name": "w_sink",
        "parents": 200,
        "succeeded": 200,
        "failed": 0,
        "skipped": 0,
    }
    assert result.messages["w_sink"] == 1
    assert workers >= 2  # the work was really shared


# -- 6. a handler that hangs past its timeout ----------------------------------------------------


def test_hung_handler_is_fenced_out_by_attempt(fault_stack: Callable[..., FaultStack]) -> None:
    fs = fault_stack()
    hang: Task = ("python.call", {"callable": fh.HANG_FIRST_ATTEMPT, "kwargs": {"max_s": 30}})
    parents = {"h_start": [], "h_hang": ["h_start"], "h_after": ["h_hang"]}
    fs.define("hang", {"h_start": RECORD, "h_hang": hang, "h_after": RECORD}, parents)
    with fs.db.begin() as conn:
        conn.execute(text("UPDATE tasks SET timeout_s = 2, max_retries = 1 WHERE name = 'h_hang'"))
    fs.start_batch("hang", "b1")

    status = fs.wait_batch("hang", "b1")
    wait_for(
        lambda: any(e.get("task") == "h_hang" for e in fs.log_events("late result rejected")),
        40,
        "the zombie's late result to be rejected",
    )

    result = check(
        fs,
        "handler hung past its timeout",
        "hang",
        "b1",
        status,
        note="attempt 1 expired (RETRY), attempt 2 succeeded; the zombie's late SUCCESS "
        "was rejected (its own effect row is the one write no fence can stop)",
    )
    outcomes = {a["attempt"]: a for a in result.attempts["h_hang"]}
    assert result.tasks["h_hang"]["attempt"] == 2
    assert outcomes[2]["outcome"] == "SUCCESS"
    assert outcomes[1]["outcome"] == "RETRY"
    assert "lease expired" in outcomes[1]["error"]
    assert result.effects[("h_hang", 1)] == 1  # the zombie's own write happened, late ...
    assert result.tasks["h_after"]["attempt"] == 1  # ... but its result released nothing
    assert result.messages["h_after"] == 1


# -- 7. dead letters -----------------------------------------------------------------------------

POISON = [
    """
    CREATE FUNCTION poison_claim() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'test fault: task_log row % cannot be claimed', NEW.log_id;
    END $$
    """,
    """
    CREATE TRIGGER poison_claim BEFORE UPDATE ON task_log FOR EACH ROW
    WHEN (NEW.status = 'PROCESSING' AND NEW.task_id = {task_id})
    EXECUTE FUNCTION poison_claim()
    """,
]


def test_poison_message_is_dead_lettered(fault_stack: Callable[..., FaultStack]) -> None:
    # No sweep loop: the only run_task for x_b is the one Pub/Sub gives up on.
    fs = fault_stack(sweep_interval_s=0)
    parents = {"x_a": [], "x_b": ["x_a"], "x_c": ["x_b"]}
    fs.define("poison", dict.fromkeys(parents, RECORD), parents)
    with fs.db.begin() as conn:  # every claim of x_b fails in the database, before it lands
        task_id = conn.execute(text("SELECT task_id FROM tasks WHERE name = 'x_b'")).scalar_one()
        for statement in POISON:
            conn.execute(text(statement.format(task_id=int(task_id))))
    fs.start_batch("poison", "b1")

    wait_for(
        lambda: fs.scalar("SELECT count(*) FROM dead_letters") > 0,
        90,
        "the poison message to be dead-lettered",
        poll_s=0.2,
    )
    with fs.db.connect() as conn:
        letter = conn.execute(text("SELECT * FROM dead_letters")).mappings().one()
    failures = fs.router_log().count("ERROR in app: Exception on")  # each a 500 to Pub/Sub
    assert (letter["action"], letter["pipeline"], letter["batch_id"], letter["task"]) == (
        "run_task",
        "poison",
        "b1",
        "x_b",
    )
    assert failures >= 5
    env = {**os.environ, "DATABASE_URL": str(fs.db.url.render_as_string(hide_password=False))}
    cli = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "dagrelay"), "status", "b1", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    shown = json.loads(cli.stdout)["batches"][0]
    assert shown["status"] == "RUNNING"
    assert [d["task"] for d in shown["dead_letters"]] == ["x_b"]

    # The cause is fixed; a sweep sends x_b a new message and the batch completes.
    with fs.db.begin() as conn:
        conn.execute(text("DROP TRIGGER poison_claim ON task_log"))
    fs.publish({"action": "sweep", "older_than_s": 0})
    status = fs.wait_batch("poison", "b1")
    check(
        fs,
        "poison run_task -> dead letter",
        "poison",
        "b1",
        status,
        note=f"{failures} failed deliveries, then dead-lettered "
        f"(delivery_attempts={letter['delivery_attempts']}); rerun by a sweep after the fix",
    )
    assert letter["delivery_attempts"] == 5
