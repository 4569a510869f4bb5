"""The model-based test of the whole state machine (ARCHITECTURE.md, "Invariants
checked by the model"). A Hypothesis ``RuleBasedStateMachine`` drives the real engine, in-process,
on the real PostgreSQL: a random pipeline (chains, diamonds, fan-in, mapped tasks with and without
tolerated_failures and max_parallel, a pool with few slots, max_active, every trigger rule) and
random interleavings of batch starts (duplicated too), deliveries (duplicated, reordered, dropped,
dead-lettered), handler outcomes (success, retryable and final failure, a hang past the lease, a
cancel while it runs), a crash at each crash point, sweeps with clock jumps, cancel, resume, the
reruns (task, --downstream, failed tasks, failed items), pipeline edits (apply and plain SQL) and
pool slot changes. The invariants of ``tests/invariants.py`` are checked after every step and, at
quiescence (every message delivered, sweeps until nothing changes), all of them.

Profiles (``DAGRELAY_MODEL_PROFILE``): ``ci`` (the default: few examples, derandomized, so a run
is reproducible) and ``soak`` (``make soak``: ``DAGRELAY_SOAK_EXAMPLES`` examples, 10 000 by
default, with a summary of what it covered). ``DAGRELAY_MODEL_SKIP=name,...`` leaves invariants
out (to see that a fix makes the rest pass).
"""

from __future__ import annotations

import base64
import json
import os
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, text

from dagrelay.config import Settings, load_settings
from dagrelay.engine import deadlines, pools, schedules
from dagrelay.engine.core import Engine as DagEngine
from dagrelay.engine.hooks import HookPoint
from dagrelay.engine.sweeper import Sweeper
from dagrelay.errors import BadMessage, NonRetryableError
from dagrelay.handlers.registry import Deferred, HandlerContext, HandlerRegistry, default_registry
from dagrelay.local.crashes import InjectedCrash
from dagrelay.messages import Envelope
from dagrelay.ops.verbs import rerun_targets
from dagrelay.pipelines.apply import apply
from dagrelay.pipelines.export import read_pipeline
from dagrelay.pipelines.on_assets import OnAssets
from dagrelay.pipelines.spec import PipelineSpec, PipelineTask
from dagrelay.router.dispatch import Router
from dagrelay.states import BatchStatus, TriggerRule
from dagrelay.store.db import create_db_engine
from dagrelay.store.outbox import InMemoryPublisher, OutgoingMessage
from tests import invariants
from tests.conftest import FakeClock, engine_settings
from tests.dbtools import create_database, drop_database
from tests.invariants import Facts

pytestmark = [pytest.mark.integration, pytest.mark.long_pole(60)]

PIPELINE = "model"
POOL = "p"
HANDLER = "model.work"
SENSOR = "sensor.signal"  # the built-in signal sensor: the signal rule ends it
# Work that runs elsewhere, deferred and polled, whose handler registers a cancel (as
# cloudrun.job): its run defers, its poll ends it, its cancel stops it (recorded in the facts).
JOB = "model.job"
SIGNAL_KEY = "sig.{batch_id}"
BATCHES = ("b1", "b2")
EVENTS, ALERTS = "dagrelay-events", "dagrelay-alerts"
DEAD_LETTER_TOPIC = "dagrelay-dead-letter"
DLQ_SOURCE = f"//pubsub.googleapis.com/projects/p/topics/{DEAD_LETTER_TOPIC}"
TIMEOUT_S = 60  # every task's lease
# Assets: the model's last task updates ASSET; the pipeline DOWNSTREAM waits for it (on_assets),
# so each of its successes starts one DOWNSTREAM batch in the same transaction.
ASSET, DOWNSTREAM = "model://out", "down"
# Emptied between examples, children first (DELETE: ~20 ms; TRUNCATE of the same: ~400 ms).
TABLES = (
    "asset_triggers", "asset_events", "asset_schedules",
    "rejected_messages", "dead_letters", "outbox", "task_attempts", "map_groups", "task_fanin",
    "task_log", "batches", "schedules", "pools", "version_edges", "version_tasks",
    "pipeline_versions", "task_dependencies", "tasks", "pipelines", "pipeline_edge_writes",
    "file_log", "signals",
)  # fmt: skip
# ... in one statement (one round trip instead of one per table)
EMPTY_TABLES = text("DO $$BEGIN " + " ".join(f"DELETE FROM {t};" for t in TABLES) + " END$$")

SUCCESS, RETRYABLE, FINAL, HANG, CANCEL = "success", "retryable", "final", "hang", "cancel"
CANCEL_RERUN = "cancel, then rerun"  # while the handler runs: the batch is CANCELLING
OUTCOMES = (SUCCESS, SUCCESS, RETRYABLE, FINAL, HANG)  # CANCEL, CANCEL_RERUN: their own rule
CRASHES: tuple[HookPoint | None, ...] = (None, None, None, *HookPoint)
ITEM = st.sampled_from([1, 2, "a", "nul\x00item"])  # a NUL is a value PostgreSQL text refuses
ITEM_LISTS = ((1, 2), (), (1,), (1, "nul\x00item"), (1, 2, "a"))  # a task's output items
OUTPUTS = st.one_of(st.sampled_from(ITEM_LISTS), st.lists(ITEM, max_size=3).map(tuple))
JUMPS = (0, 31, 61, 600, 3600)
# A task's deadline (within_s, fail): missed after one 61 s jump, failing the task or not.
DEADLINES: tuple[tuple[int, bool] | None, ...] = (None, None, (60, False), (60, True))

# -- profiles ------------------------------------------------------------------------------------

PROFILE_ENV, SOAK_ENV = "DAGRELAY_MODEL_PROFILE", "DAGRELAY_SOAK_EXAMPLES"
EXAMPLES_ENV = "DAGRELAY_MODEL_EXAMPLES"  # any profile, for a quick look
_COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None,  # no example database: what runs is what the profile says
    "suppress_health_check": list(HealthCheck),
    "stateful_step_count": 40,
    "report_multiple_bugs": False,  # shrink the first bug found, quickly
}
settings.register_profile(
    "dagrelay-model-ci", max_examples=120, derandomize=True, print_blob=False, **_COMMON
)
settings.register_profile(
    "dagrelay-model-soak",
    max_examples=int(os.environ.get(SOAK_ENV, "10000")),
    phases=[Phase.generate, Phase.shrink],
    **_COMMON,
)


def profile() -> settings:
    name = os.environ.get(PROFILE_ENV, "ci")
    chosen = settings.get_profile(f"dagrelay-model-{name}")
    examples = os.environ.get(EXAMPLES_ENV)
    return settings(chosen, max_examples=int(examples)) if examples else chosen


# -- the harness: one database per run, the engine rebuilt per example ----------------------------


@dataclass
class Coverage:
    examples: int = 0
    steps: int = 0
    states: set[tuple[Any, ...]] = field(default_factory=set)
    rules: Counter[str] = field(default_factory=Counter)
    seams: Counter[str] = field(default_factory=Counter)  # how often a rule reached its seam


@dataclass
class Harness:
    db: Engine
    registry: HandlerRegistry
    settings: Settings = field(default_factory=engine_settings)  # built once: ~10 ms each
    coverage: Coverage = field(default_factory=Coverage)
    machine: DagrelayMachine | None = None


@pytest.fixture(scope="module")
def harness(template_db: str) -> Iterator[Harness]:
    with open_harness(template_db) as h:
        yield h


@contextmanager
def open_harness(template_db: str) -> Iterator[Harness]:
    """A database of the model's own and the registry of its one handler."""
    name = f"dagrelay_model_{uuid.uuid4().hex[:12]}"
    # the engine the function builds: a pool (a new pg8000 connection costs a TLS context)
    url = create_database(name, template=template_db)
    db = create_db_engine(load_settings(database_url=url, db_pool_size=4, db_max_overflow=4))
    h = Harness(db, HandlerRegistry(load=False))
    h.registry.register(HANDLER, lambda ctx: _current(h).handle(ctx))
    sensor = default_registry.get(SENSOR)
    h.registry.register(SENSOR, sensor.function, poll=sensor.poll, params_model=sensor.params_model)
    h.registry.register(
        JOB,
        lambda ctx: Deferred({"job": f"{ctx.batch_id}/{ctx.task}/{ctx.attempt}"}, 30),
        poll=lambda ctx, job: {"job": job["job"]},
        cancel=lambda ctx, job: _current(h).facts.stopped.add(
            (ctx.pipeline, ctx.batch_id, ctx.task, ctx.attempt)
        ),
    )
    try:
        yield h
    finally:
        db.dispose()
        drop_database(name)


def _current(h: Harness) -> DagrelayMachine:
    assert h.machine is not None
    return h.machine


HARNESS: list[Harness] = []  # the running test's harness, for the machine's constructor
# seconds spent per rule in the running test
timings: defaultdict[str, float] = defaultdict(float)


# -- the pipeline generator ----------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One drawn task, printed short in a falsifying example (defaults left out)."""

    parents: tuple[int, ...] = ()
    rule: TriggerRule = TriggerRule.ALL_SUCCESS
    map: tuple[tuple[str, Any], ...] | None = None  # (key, value) pairs besides "over"
    pool: bool = False
    max_active: bool = False
    retries: int = 0
    items: tuple[Any, ...] = ()  # what its handler outputs under "items"
    teardown: bool = False  # clean-up: all_done, spared by a cancel
    deadline: tuple[int, bool] | None = None  # (within_s, fail): checked by every sweep
    sensor: str | None = None  # a signal sensor (sensor.signal) with this on_timeout
    job: bool = False  # deferred work with a cancel (JOB)

    def __repr__(self) -> str:
        shown = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != f.default
        ]
        return f"Task({', '.join(shown)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how Hypothesis prints it
        printer.text(repr(self))

    def spec(self, name: str) -> PipelineTask:
        mapped = None
        if self.map is not None:
            mapped = {"over": f"t{self.parents[0]}.items", **dict(self.map)}
        params: dict[str, Any] = {}
        if self.sensor is not None:  # waits for "sig.<batch>" for two hours at most
            params = {"key": SIGNAL_KEY, "timeout_s": 7200, "on_timeout": self.sensor}
        return PipelineTask(
            name=name,
            handler=SENSOR if self.sensor is not None else JOB if self.job else HANDLER,
            params=params,
            parents=tuple(f"t{p}" for p in self.parents),
            trigger_rule=self.rule,
            max_retries=self.retries,
            retry_delay_s=10,
            retry_max_delay_s=10,
            timeout_s=TIMEOUT_S,
            pool=POOL if self.pool else None,
            max_active=1 if self.max_active else None,
            map=mapped,
            teardown=self.teardown,
            deadline=None
            if self.deadline is None
            else {"within_s": self.deadline[0], "fail": self.deadline[1]},
        )


@dataclass(frozen=True)
class Schedule:
    """The pipeline's schedule row (written with plain SQL): its ticks start from sweeps."""

    cron: str = "*/30 * * * *"
    catchup: str = "latest"
    overlap: str = "skip"
    max_active: int = 1


@dataclass(frozen=True)
class Pipeline:
    tasks: tuple[Task, ...]
    slots: int = 1  # its pool's
    schedule: Schedule | None = None
    deadline: int | None = None  # the batch's, within_s after its scheduled time or start

    def spec(self) -> PipelineSpec:
        tasks = [t.spec(f"t{i}") for i, t in enumerate(self.tasks)]
        tasks[-1] = replace(tasks[-1], updates=(ASSET,))
        return PipelineSpec(
            PIPELINE,
            tuple(tasks),
            deadline=None if self.deadline is None else {"within_s": self.deadline},
        )


def downstream() -> PipelineSpec:
    """The pipeline started by the model's asset (one batch per update)."""
    task = PipelineTask(name=f"{DOWNSTREAM}.t", handler=HANDLER, timeout_s=TIMEOUT_S)
    return PipelineSpec(DOWNSTREAM, (task,), on_assets=OnAssets((ASSET,), "down-{n}"))


@st.composite
def pipelines(draw: st.DrawFn) -> Pipeline:
    """A random pipeline of 2..5 tasks t0..t4 (edges go from lower to higher index: chains,
    diamonds, fan-in), each task's output items, and its pool's slots. Hypothesis starts from
    the simplest draw and the CI profile sees few examples: the simplest pipeline is therefore
    a chain whose second task is mapped over two items (where map, cancel and resume meet),
    not a pooled, max_active, scheduled one."""
    tasks: list[Task] = []
    for i in range(draw(st.integers(2, 5))):
        parents: tuple[int, ...] = ()
        if i and draw(st.integers(0, 2)) == 0:
            parents = (i - 1,)
        elif i:
            parents = tuple(sorted(draw(st.sets(st.integers(0, i - 1), max_size=2))))
        rule_ = draw(st.sampled_from(list(TriggerRule))) if parents else TriggerRule.ALL_SUCCESS
        options: tuple[tuple[str, Any], ...] | None = None
        over_mapped = len(parents) == 1 and tasks[parents[0]].map is not None
        if len(parents) == 1 and not over_mapped and not draw(st.booleans()):
            rule_ = TriggerRule.ALL_SUCCESS
            tolerated = draw(st.sampled_from([None, 1, "50%"]))
            parallel = draw(st.sampled_from([None, 1, 2]))
            options = tuple(
                (k, v)
                for k, v in (("tolerated_failures", tolerated), ("max_parallel", parallel))
                if v is not None
            )
        teardown = options is None and bool(parents) and draw(st.integers(0, 4)) == 4
        if teardown:
            rule_ = TriggerRule.ALL_DONE
        tasks.append(
            Task(
                parents=parents,
                rule=rule_,
                teardown=teardown,
                map=options,
                pool=draw(st.integers(0, 2)) == 2,
                max_active=draw(st.integers(0, 4)) == 4,
                retries=draw(st.integers(0, 2)),
                items=draw(OUTPUTS),
                deadline=draw(st.sampled_from(DEADLINES)),
            )
        )
    if draw(st.integers(0, 2)) == 2:  # a leaf signal sensor below t0
        tasks.append(Task(parents=(0,), sensor=draw(st.sampled_from(["error", "skip"]))))
    if draw(st.integers(0, 2)) == 2:  # a leaf deferred job below t0, with a cancel
        tasks.append(Task(parents=(0,), job=True))
    schedule = None
    if draw(st.integers(0, 3)) == 3:
        schedule = Schedule(
            cron=draw(st.sampled_from(["*/30 * * * *", "0 * * * *"])),
            catchup=draw(st.sampled_from(["latest", "all"])),
            overlap=draw(st.sampled_from(["skip", "wait"])),
            max_active=draw(st.integers(1, 2)),
        )
    deadline = draw(st.sampled_from([None, 600]))
    return Pipeline(tuple(tasks), draw(st.integers(1, 2)), schedule, deadline)


# -- the machine ---------------------------------------------------------------------------------


def _payload(envelope: Envelope) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(base64.b64decode(envelope.data or ""))
    return body


def _envelope(message: OutgoingMessage) -> Envelope:
    data = base64.b64encode(message.data()).decode()
    return Envelope(data, dict(message.attributes), f"outbox-{message.outbox_id}")


class DagrelayMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h = HARNESS[-1]
        self.h.machine = self
        self.h.coverage.examples += 1
        with self.h.db.begin() as conn:
            conn.execute(EMPTY_TABLES)
        self.clock = FakeClock()
        self.publisher = InMemoryPublisher()
        self.armed: HookPoint | None = None
        self.engine: DagEngine = DagEngine(
            self.h.db,
            self.publisher,
            self.h.registry,
            events_topic=self.h.settings.events_topic,
            alerts_topic=self.h.settings.alerts_topic,
            worker_id="model",
            clock=self.clock,
            rng=random.Random(0),
            hooks=self,
        )
        self.router = Router(self.engine, self.h.db, self.clock, DEAD_LETTER_TOPIC)
        self.sweeper = Sweeper(self.engine)
        self.pending: list[Envelope] = []
        self.facts = Facts()
        self.outcome = SUCCESS
        self.quiescing = False
        self.outputs: dict[str, list[Any]] = {}
        self.tasks: list[str] = []
        self.mapped: list[str] = []
        self.pooled = False
        self.sensing = False
        self.scheduled = False
        self.started: list[str] = []  # batch ids, in the order of their first start
        self.track_states = os.environ.get(PROFILE_ENV) == "soak"
        self.operator_messages = 0
        self.t0 = time.monotonic()

    # -- the engine's hooks (crash points) and the one handler

    def at(self, point: HookPoint, task: str) -> None:
        if self.armed == point:
            self.armed = None
            raise InjectedCrash(f"model: crash at {point} of {task}")

    def handle(self, ctx: HandlerContext[Any]) -> dict[str, Any]:
        outcome, self.outcome = self.outcome, SUCCESS  # one outcome per delivery
        if self.quiescing or outcome == SUCCESS:
            return {"items": self.outputs.get(ctx.task, [])}
        if outcome == RETRYABLE:
            raise RuntimeError(f"model: {ctx.task} failed, retryable")
        if outcome == FINAL:
            raise NonRetryableError(f"model: {ctx.task} failed for good")
        if outcome == HANG:  # past its lease: the sweeper concludes it, its result comes late
            self.clock.advance(TIMEOUT_S + 1)
            self.sweeper.expire_leases()
        if outcome in (CANCEL, CANCEL_RERUN):  # an operator cancels while it runs
            self._operator(
                {"action": "cancel_batch", "pipeline": PIPELINE, "batch_id": ctx.batch_id}
            )
        if outcome == CANCEL_RERUN:  # ... and reruns another task (refused while CANCELLING)
            other = [t for t in self.tasks if t != ctx.task][-1]
            self._operator(
                {
                    "action": "rerun",
                    "pipeline": PIPELINE,
                    "batch_id": ctx.batch_id,
                    "task": other,
                    "downstream": True,
                }
            )
        return {"items": self.outputs.get(ctx.task, [])}

    # -- plumbing

    def _collect(self) -> None:
        self.pending += [_envelope(m) for m in self.publisher.drain(EVENTS)]
        self.publisher.drain(ALERTS)  # alerts are checked in the outbox

    def _note(self, name: str) -> None:
        """After a rule: collect what it published; count the step, its time and (in the soak
        profile) the state it reached: the rule with the set of statuses it left."""
        self._collect()
        cov = self.h.coverage
        cov.steps += 1
        cov.rules[name] += 1
        timings[name] += time.monotonic() - self.t0
        if self.track_states:
            with self.h.db.connect() as conn:
                shape = conn.execute(
                    text(
                        "SELECT coalesce(string_agg(s, ',' ORDER BY s), '') FROM ("
                        "SELECT 'b:' || status::text AS s FROM batches UNION ALL "
                        "SELECT DISTINCT 't:' || status::text FROM task_log) x"
                    )
                ).scalar_one()
            cov.states.add((name, shape))
        self.t0 = time.monotonic()

    def _deliver(self, envelope: Envelope, outcome: str, crash: HookPoint | None) -> None:
        self.outcome, self.armed = outcome, crash
        try:
            self.router.handle(envelope)
        except InjectedCrash:
            pass  # the instance died here; Pub/Sub redelivers after the ack deadline
        except Exception as exc:
            self.facts.raised.append(f"{envelope.message_id}: {type(exc).__name__}: {exc}")
            raise
        finally:
            self.outcome, self.armed = SUCCESS, None

    def _operator(self, payload: dict[str, Any]) -> str:
        """An operator's message through the router, as the CLI or dashboard publishes it; what
        the model knows about cancels follows its outcome."""
        self.operator_messages += 1
        batch = (payload.get("pipeline", PIPELINE), payload.get("batch_id", ""))  # signal: none
        before = self._batch_status(batch[1])
        data = base64.b64encode(json.dumps(payload).encode()).decode()
        envelope = Envelope(data, {"action": payload["action"]}, f"op-{self.operator_messages}")
        outcome = self.router.handle(envelope)
        action = payload["action"]
        if action == "cancel_batch" and outcome not in {"not running", "rejected"}:
            with self.h.db.connect() as conn:
                ids = conn.execute(
                    text("SELECT attempt_id FROM task_attempts WHERE batch_id = :b"),
                    {"b": batch[1]},
                ).scalars()
                self.facts.cancelled[batch] = frozenset(ids)
            self.facts.resumed.discard(batch)
        lifted = action == "resume" or (action == "rerun" and before == BatchStatus.CANCELLED)
        if lifted and outcome != "rejected":
            self.facts.cancelled.pop(batch, None)
        if action == "resume" and outcome != "rejected":
            self.facts.resumed.add(batch)
        return outcome

    def _batch_status(self, batch_id: str) -> str | None:
        with self.h.db.connect() as conn:
            return conn.execute(
                text("SELECT status::text FROM batches WHERE pipeline = :p AND batch_id = :b"),
                {"p": PIPELINE, "b": batch_id},
            ).scalar_one_or_none()

    def _check(self, *, quiescent: bool = False) -> None:
        with self.h.db.connect() as conn:
            found = invariants.check_all(
                conn, self.facts, quiescent=quiescent, skip=invariants.skipped()
            )
        assert not found, "invariants violated:\n  " + "\n  ".join(found)

    # -- rules

    @initialize(pipeline=pipelines())
    def define(self, pipeline: Pipeline) -> None:
        spec = pipeline.spec()
        self.outputs = {f"t{i}": list(t.items) for i, t in enumerate(pipeline.tasks)}
        self.tasks = [t.name for t in spec.tasks]
        self.mapped = [t.name for t in spec.tasks if t.map is not None]
        self.pooled = any(t.pool for t in spec.tasks)
        self.sensing = any(t.sensor is not None for t in pipeline.tasks)
        with self.h.db.begin() as conn:
            apply(conn, spec, now=self.clock())
            apply(conn, downstream(), now=self.clock())
        pools.set_pool(self.engine, POOL, pipeline.slots)
        if pipeline.schedule is not None:
            row = {"pipeline": PIPELINE, **asdict(pipeline.schedule)}
            with self.h.db.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO schedules (pipeline, cron, catchup, overlap, "
                        "max_active_batches) VALUES (:pipeline, :cron, :catchup, :overlap, "
                        ":max_active)"
                    ),
                    row,
                )
            self.scheduled = True
        self._note("define")

    @rule(batch=st.sampled_from(BATCHES))
    def start_batch(self, batch: str) -> None:
        self._operator({"action": "start_batch", "pipeline": PIPELINE, "batch_id": batch})
        if batch not in self.started:
            self.started.append(batch)
        self._note("start_batch")

    @precondition(lambda self: self.pending)
    @rule(
        index=st.integers(0, 30),
        outcome=st.sampled_from(OUTCOMES),
        crash=st.sampled_from(CRASHES),
    )
    def deliver(self, index: int, outcome: str, crash: HookPoint | None) -> None:
        envelope = self.pending.pop(index % len(self.pending))  # any order
        self._deliver(envelope, outcome, crash)
        self._note("deliver")

    @precondition(lambda self: self.pending)
    @rule()
    def deliver_next(self) -> None:
        """The oldest message, delivered and handled without a fault (progress)."""
        self._deliver(self.pending.pop(0), SUCCESS, None)
        self._note("deliver_next")

    @precondition(lambda self: self.pending)
    @rule(index=st.integers(0, 30), then_rerun=st.booleans())
    def cancel_while_running(self, index: int, then_rerun: bool) -> None:
        """An operator cancels the batch while the handler of this delivery runs (and, with
        ``then_rerun``, reruns another task while the batch is CANCELLING)."""
        outcome = CANCEL_RERUN if then_rerun else CANCEL
        self._deliver(self.pending.pop(index % len(self.pending)), outcome, None)
        self._note("cancel_while_running")

    @precondition(lambda self: self.mapped and self.started)
    @rule(index=st.integers(0, 30), then_resume=st.booleans())
    def cancel_mid_map(self, index: int, then_resume: bool) -> None:
        """An operator cancels the batch while an instance of a mapped task runs (a seam of map
        and cancel: what resumes after it must run the rest of the items). The oldest messages
        are delivered first (no fault) until an instance's run_task is pending, so that this
        seam is one step away from a start, not a lucky sequence of ten."""
        for _ in range(20):
            if self._mapped_runs() or not self.pending:
                break
            self._deliver(self.pending.pop(0), SUCCESS, None)
            self._collect()
        runs = self._mapped_runs()
        if runs:
            envelope = runs[index % len(runs)]
            self.pending.remove(envelope)
            self._deliver(envelope, CANCEL, None)
            self._collect()
            self.h.coverage.seams["cancel mid-map"] += 1
            batch = _payload(envelope)["batch_id"]
            if then_resume and self._batch_status(batch) == BatchStatus.CANCELLED:
                self._operator({"action": "resume", "pipeline": PIPELINE, "batch_id": batch})
                self.h.coverage.seams["resume after cancel mid-map"] += 1
        self._note("cancel_mid_map")

    def _mapped_runs(self) -> list[Envelope]:
        """The pending run_task messages of a mapped task's instances."""
        return [e for e in self.pending if _payload(e).get("map_index") is not None]

    @precondition(lambda self: self.pending)
    @rule(index=st.integers(0, 30))
    def duplicate(self, index: int) -> None:
        self.pending.append(self.pending[index % len(self.pending)])
        self._note("duplicate")

    @precondition(lambda self: self.pending)
    @rule(index=st.integers(0, 30), dead_letter=st.booleans())
    def drop(self, index: int, dead_letter: bool) -> None:
        """A message lost, or given up on by Pub/Sub (dead-lettered): the sweeper repairs."""
        envelope = self.pending.pop(index % len(self.pending))
        if dead_letter:
            body = {
                "message": {
                    "data": envelope.data,
                    "attributes": {
                        **envelope.attributes,
                        "CloudPubSubDeadLetterSourceDeliveryCount": "5",
                    },
                    "messageId": f"dl-{envelope.message_id}",
                }
            }
            self.router.handle_push(body, source=DLQ_SOURCE)
        self._note("drop")

    @precondition(lambda self: self.scheduled)
    @rule(jump=st.sampled_from(JUMPS), twice=st.booleans())
    def tick(self, jump: int, twice: bool) -> None:
        """The sweep's schedule step alone after a clock jump (twice: two sweeps at once)."""
        self.clock.advance(jump)
        for _ in range(2 if twice else 1):
            schedules.start_due_ticks(self.engine)
        self._note("tick")

    @precondition(lambda self: self.started)
    @rule(jump=st.sampled_from(JUMPS))
    def deadlines(self, jump: int) -> None:
        """The sweep's deadline step alone after a clock jump, twice (two sweeps at once):
        each miss one alert, each fail once."""
        self.clock.advance(jump)
        for _ in range(2):
            deadlines.check(self.engine)
        self._note("deadlines")

    @rule(jump=st.sampled_from(JUMPS))
    def sweep(self, jump: int) -> None:
        self.clock.advance(jump)
        self.sweeper.sweep()
        self._note("sweep")

    @precondition(lambda self: self.sensing and self.started)
    @rule(which=st.integers(0, 1), twice=st.booleans())
    def signal(self, which: int, twice: bool) -> None:
        """Someone sends the signal a batch's sensor waits for (``twice``: delivered twice)."""
        batch = self.started[which % len(self.started)]
        key = SIGNAL_KEY.replace("{batch_id}", batch)
        payload = {"action": "signal", "key": key, "signal_id": f"{key}-{self.operator_messages}"}
        self._operator(payload)
        if twice:
            self.operator_messages -= 1  # the same message id: a redelivery
            self._operator(payload)
        self._note("signal")

    @precondition(lambda self: self.started)
    @rule(which=st.integers(0, 1))
    def cancel(self, which: int) -> None:
        batch = self.started[which % len(self.started)]
        self._operator({"action": "cancel_batch", "pipeline": PIPELINE, "batch_id": batch})
        self._note("cancel")

    @precondition(lambda self: self.facts.cancelled)
    @rule(which=st.integers(0, 1))
    def resume(self, which: int) -> None:
        """Resume a batch an operator cancelled (a resume of anything else is refused: the
        router's own tests cover that)."""
        cancelled = sorted(b for _, b in self.facts.cancelled)
        batch = cancelled[which % len(cancelled)]
        self._operator({"action": "resume", "pipeline": PIPELINE, "batch_id": batch})
        self._note("resume")

    @precondition(lambda self: self.started)
    @rule(which=st.integers(0, 1), task=st.integers(0, 4), downstream=st.booleans())
    def rerun(self, which: int, task: int, downstream: bool) -> None:
        batch = self.started[which % len(self.started)]
        name = self.tasks[task % len(self.tasks)]
        self._operator(
            {
                "action": "rerun",
                "pipeline": PIPELINE,
                "batch_id": batch,
                "task": name,
                "downstream": downstream,
            }
        )
        self._note("rerun")

    @precondition(lambda self: self.mapped and self.started)
    @rule(which=st.integers(0, 1), task=st.integers(0, 4))
    def rerun_failed_items(self, which: int, task: int) -> None:
        batch = self.started[which % len(self.started)]
        name = self.mapped[task % len(self.mapped)]
        self._operator(
            {
                "action": "rerun",
                "pipeline": PIPELINE,
                "batch_id": batch,
                "task": name,
                "downstream": True,
                "failed_items": True,
            }
        )
        self._note("rerun_failed_items")

    @precondition(lambda self: self.started)
    @rule(which=st.integers(0, 1))
    def rerun_failed(self, which: int) -> None:
        """``dagrelay backfill --reprocess failed``: the tasks that did not get done, each with
        its downstream (``ops.rerun_targets``), rerun in one call as the CLI does."""
        batch = self.started[which % len(self.started)]
        with self.h.db.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT t.name, tl.status::text AS status FROM batches b "
                    "JOIN version_tasks t ON t.version_id = b.version_id "
                    "LEFT JOIN task_log tl ON tl.batch_id = b.batch_id "
                    "AND tl.task_id = t.task_id AND tl.map_index = -1 "
                    "WHERE b.pipeline = :p AND b.batch_id = :b"
                ),
                {"p": PIPELINE, "b": batch},
            ).all()
            edges = conn.execute(
                text(
                    "SELECT c.name AS child, p.name AS parent FROM batches b "
                    "JOIN version_edges e ON e.version_id = b.version_id "
                    "JOIN version_tasks c ON c.version_id = b.version_id "
                    "AND c.task_id = e.child_task_id "
                    "JOIN version_tasks p ON p.version_id = b.version_id "
                    "AND p.task_id = e.parent_task_id "
                    "WHERE b.pipeline = :p AND b.batch_id = :b"
                ),
                {"p": PIPELINE, "b": batch},
            ).all()
        parents: dict[str, list[str]] = {}
        for edge in edges:
            parents.setdefault(edge.child, []).append(edge.parent)
        targets = rerun_targets({r.name: r.status for r in rows}, parents, everything=False)
        if rows and targets:
            before = self._batch_status(batch)
            try:
                self.engine.rerun_tasks(batch, targets, downstream=True, pipeline=PIPELINE)
            except BadMessage:
                pass  # refused (a task in scope runs): the CLI shows why and stops
            else:
                if before == BatchStatus.CANCELLED:
                    self.facts.cancelled.pop((PIPELINE, batch), None)
        self._note("rerun_failed")

    @rule(
        task=st.integers(0, 4),
        kind=st.sampled_from(["apply", "enabled", "rule", "retries", "slots"]),
        value=st.integers(0, 3),
    )
    def edit(self, task: int, kind: str, value: int) -> None:
        """An operator's change: ``dagrelay apply`` (``value`` the task's priority), a plain-SQL
        edit, or the pool's slots (``value``). One rule, so that edits take no bigger share of
        the steps than a delivery does."""
        if kind == "apply":
            self._edit_apply(task, value % 3)
        elif kind == "slots":
            if self.pooled:
                self.set_slots(value)
        else:
            self._edit_sql(task, kind)
        self._note("edit")

    def _edit_sql(self, task: int, kind: str) -> None:
        """A plain-SQL edit of the live rows: only batches started after it see it."""
        name = self.tasks[task % len(self.tasks)]
        sets = {
            "enabled": "enabled = NOT enabled",
            "rule": "trigger_rule = CASE WHEN trigger_rule = 'all_success' THEN "
            "'all_done'::trigger_rule ELSE 'all_success'::trigger_rule END",
            "retries": "max_retries = mod(max_retries + 1, 3)",
        }[kind]
        with self.h.db.begin() as conn:
            conn.execute(
                text(
                    f"UPDATE tasks SET {sets} WHERE pipeline = :p AND name = :n AND map IS NULL "
                    "AND NOT teardown"  # a teardown's rule is all_done (the rule of its kind)
                ),
                {"p": PIPELINE, "n": name},
            )

    def _edit_apply(self, task: int, priority: int) -> None:
        """``dagrelay apply`` of the exported pipeline with one task changed."""
        name = self.tasks[task % len(self.tasks)]
        with self.h.db.begin() as conn:
            spec = read_pipeline(conn, PIPELINE)
            changed = tuple(
                replace(t, priority=priority, params={"edit": priority}) if t.name == name else t
                for t in spec.tasks
            )
            apply(conn, replace(spec, tasks=changed), now=self.clock())

    def set_slots(self, slots: int) -> None:
        with self.h.db.connect() as conn:
            holders = conn.execute(
                text(
                    "SELECT log_id FROM task_log WHERE pool = :p AND limited "
                    "AND status = 'PROCESSING'"
                ),
                {"p": POOL},
            ).scalars()
            self.facts.grandfathered[POOL] = frozenset(holders)
        pools.set_pool(self.engine, POOL, slots)

    @precondition(lambda self: self.started)
    @rule()
    def quiesce(self) -> None:
        self._quiesce()
        self._note("quiesce")

    def _quiesce(self) -> None:
        """Deliver everything (handlers succeed, nothing crashes), sweep after an hour, until
        nothing changes; then every invariant holds."""
        self.quiescing = True
        if self.scheduled:  # new ticks would start batches forever
            with self.h.db.begin() as conn:
                conn.execute(text("UPDATE schedules SET paused = true"))
        try:
            with self.h.db.connect() as conn:
                slots = conn.execute(
                    text("SELECT slots FROM pools WHERE name = :p"), {"p": POOL}
                ).scalar_one_or_none()
            if slots == 0:  # a pool closed by the operator never drains: open it
                self.set_slots(1)
            for _ in range(40):
                delivered = 0
                while self.pending and delivered < 500:
                    self._deliver(self.pending.pop(0), SUCCESS, None)
                    self._collect()
                    delivered += 1
                self.clock.advance(3600)
                report = self.sweeper.sweep()
                self._collect()
                busy = (report.expired, report.relayed, report.requeued, report.batches_finished)
                if not self.pending and not any(busy):
                    break
            else:
                raise AssertionError("the batches did not quiesce in 40 rounds of sweeps")
        finally:
            self.quiescing = False
            if self.scheduled:
                with self.h.db.begin() as conn:
                    conn.execute(text("UPDATE schedules SET paused = false"))
        self._check(quiescent=True)

    @invariant()
    def holds(self) -> None:
        if self.tasks:  # after define
            self._check()

    def teardown(self) -> None:
        try:
            if self.started:
                self._quiesce()
        finally:
            # deferred work whose handler's cancel was called (a cancel or an expired lease)
            self.h.coverage.seams["deferred job stopped"] += len(self.facts.stopped)
            self.h.machine = None


@pytest.mark.timeout(0)  # the profile bounds it; a shrink on a loaded machine takes minutes
def test_state_machine(harness: Harness) -> None:
    """Fails with the shrunk sequence of steps that breaks an invariant."""
    HARNESS.append(harness)
    started = time.monotonic()
    timings.clear()
    try:
        # Hypothesis leaves run_state_machine_as_test unannotated (its own typing stub ends at
        # the decorators); the call is checked by the test itself
        run_state_machine_as_test(DagrelayMachine, settings=profile())  # type: ignore[no-untyped-call]
    finally:
        HARNESS.pop()
        cov = harness.coverage
        print(
            f"\nmodel: {cov.examples} examples, {cov.steps} steps, {len(cov.states)} distinct "
            f"(rule, statuses) states in {time.monotonic() - started:.1f} s; rules: "
            + ", ".join(f"{k} {v} ({timings[k]:.1f} s)" for k, v in sorted(cov.rules.items()))
            + "; seams: "
            + ", ".join(f"{k} {v}" for k, v in sorted(cov.seams.items()))
        )
