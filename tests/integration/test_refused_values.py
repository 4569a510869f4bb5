"""A message the engine wrote itself is never "bad": when the database
refuses a value the engine produced — a mapped task's item, a task's output, its error text, a
deferral's job — the task it concerns ends ERROR at once with the reason, in a transaction of
its own, and the message is acknowledged. One bad item closes its own group, never its
parent's transaction (blast radius of one)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, text

from dagrelay.engine.core import Engine as DagEngine
from dagrelay.handlers.registry import Deferred, HandlerContext, HandlerRegistry, default_registry
from dagrelay.messages import Envelope, StartBatch
from dagrelay.router.dispatch import Router
from dagrelay.router.wiring import build_engine
from dagrelay.store.outbox import InMemoryPublisher, OutgoingMessage
from tests.conftest import FakeClock, engine_settings
from tests.integration import map_helpers as mh
from tests.integration.helpers import EVENTS_TOPIC, batch_status, scalar

pytestmark = pytest.mark.integration

InsertPipeline = Callable[..., dict[str, int]]
HERE = "tests.integration.test_refused_values"
ALERTS = "dagrelay-alerts"


# -- python.call functions ---------------------------------------------------------------------


def nul_items() -> dict[str, Any]:
    return {"items": ["a", "b\x00c", "d"]}


def nul_output() -> dict[str, Any]:
    return {"note": "fine", "detail": {"lines": ["ok", "bad\x00"]}}


def nul_failure() -> None:
    raise RuntimeError("the source said \x00 and stopped")


def forbidden_output() -> dict[str, Any]:
    return {"forbidden": True}


def reference(key: str) -> dict[str, Any]:
    return {"items": f"gs://bucket/{key}.jsonl"}


def references() -> dict[str, Any]:
    return {"good": "gs://bucket/good.jsonl", "bad": "gs://bucket/bad.jsonl"}


def make_lists() -> dict[str, Any]:
    return {"ok": [1, 2, 3], "bad": [1, "poison", 3]}


def deferring(ctx: HandlerContext) -> Deferred:
    return Deferred({"forbidden": ctx.task}, poll_after_s=1)


def never_polled(ctx: HandlerContext, job: Any) -> Any:
    raise AssertionError("a refused deferral is never polled")


def call(function: str, **kwargs: Any) -> str:
    return json.dumps({"callable": f"{HERE}:{function}", "kwargs": kwargs})


# -- driving through the router ----------------------------------------------------------------


@pytest.fixture
def engine(db: Engine, publisher: InMemoryPublisher, clock: FakeClock) -> DagEngine:
    """python.call, python.noop, and test.defer: a handler that defers its work."""
    registry = HandlerRegistry()
    for name in ("python.call", "python.noop"):
        builtin = default_registry.get(name)
        registry.register(builtin.name, builtin.function, builtin.params_schema)
    registry.register("test.defer", deferring, poll=never_polled)
    return build_engine(
        engine_settings(), db=db, publisher=publisher, registry=registry, clock=clock
    )


@pytest.fixture
def router(engine: DagEngine, db: Engine, clock: FakeClock) -> Router:
    return Router(engine, db, clock, dead_letter_topic="dagrelay-dead-letters")


def envelope(message: OutgoingMessage) -> Envelope:
    data = base64.b64encode(message.data()).decode()
    return Envelope(data, dict(message.attributes), f"outbox-{message.outbox_id}")


def deliver_all(router: Router, publisher: InMemoryPublisher) -> list[str]:
    """Every published event through the router, until none is left: what it answered."""
    answers: list[str] = []
    while messages := publisher.drain(EVENTS_TOPIC):
        answers += [router.handle(envelope(m)) for m in messages]
        assert len(answers) < 1000, "the batch does not converge"
    return answers


def rows(db: Engine, batch_id: str = "b1") -> dict[tuple[str, int], dict[str, Any]]:
    with db.connect() as conn:
        found = conn.execute(
            text(
                "SELECT t.name, tl.map_index, tl.status::text AS status, tl.error, tl.output "
                "FROM task_log tl JOIN tasks t USING (task_id) WHERE tl.batch_id = :b"
            ),
            {"b": batch_id},
        ).mappings()
        return {(r["name"], r["map_index"]): dict(r) for r in found}


def rejected(db: Engine) -> list[str]:
    with db.connect() as conn:
        return list(conn.execute(text("SELECT reason FROM rejected_messages")).scalars())


def alerts(publisher: InMemoryPublisher) -> list[str]:
    return [json.loads(m.data())["task"] for m in publisher.drain(ALERTS)]


def mapped(insert_pipeline: InsertPipeline, db: Engine, source: str, **map_spec: Any) -> None:
    """src -> each (mapped over src.items) -> join."""
    insert_pipeline(
        "p",
        {"src": [], "each": ["src"], "join": ["each"]},
        handlers={"src": "python.call"},
        params={"src": source},
    )
    mh.set_map(db, "p", "each", {"over": "src.items", **map_spec})


# -- the parent's output -----------------------------------------------------------------------


def test_a_nul_in_the_items_of_the_parents_output_ends_the_parent_error_naming_the_item(
    router: Router,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    db: Engine,
    insert_pipeline: InsertPipeline,
) -> None:
    mapped(insert_pipeline, db, call("nul_items"))
    engine.start_batch(StartBatch("p", "b1"))

    answers = deliver_all(router, publisher)

    assert rejected(db) == [], "the engine's own run_task is not a bad message"
    assert answers == ["error"]
    found = rows(db)
    assert found[("src", -1)]["status"] == "ERROR"
    error = found[("src", -1)]["error"]
    assert "output at items/1" in error
    assert "NUL" in error
    assert found[("each", -1)]["status"] == "UPSTREAM_FAILED"
    assert found[("join", -1)]["status"] == "UPSTREAM_FAILED"
    assert batch_status(db, "p", "b1") == "FAILED"
    assert alerts(publisher) == ["src"]


def test_a_nul_anywhere_in_an_output_ends_the_task_error_at_once(
    router: Router,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    db: Engine,
    insert_pipeline: InsertPipeline,
) -> None:
    insert_pipeline(
        "p", {"a": [], "b": ["a"]}, handlers={"a": "python.call"}, params={"a": call("nul_output")}
    )
    with db.begin() as conn:  # retries would only produce the same output again
        conn.execute(text("UPDATE tasks SET max_retries = 3 WHERE name = 'a'"))
    engine.start_batch(StartBatch("p", "b1"))

    assert deliver_all(router, publisher) == ["error"]

    assert rejected(db) == []
    found = rows(db)
    assert found[("a", -1)]["status"] == "ERROR"
    assert "output at detail/lines/1" in found[("a", -1)]["error"]
    assert found[("b", -1)]["status"] == "UPSTREAM_FAILED"
    assert scalar(db, "SELECT count(*) FROM task_attempts") == 1


def test_a_nul_in_a_handlers_error_is_stored_escaped(
    router: Router,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    db: Engine,
    insert_pipeline: InsertPipeline,
) -> None:
    insert_pipeline(
        "p", {"a": []}, handlers={"a": "python.call"}, params={"a": call("nul_failure")}
    )
    engine.start_batch(StartBatch("p", "b1"))

    assert deliver_all(router, publisher) == ["error"]

    assert rejected(db) == []
    error = rows(db)[("a", -1)]["error"]
    assert error == "RuntimeError: the source said \\u0000 and stopped"
    traceback = scalar(db, "SELECT traceback FROM task_attempts")
    assert "\\u0000" in traceback


@pytest.mark.fresh_db  # it adds CHECK constraints to task_log
def test_any_value_the_database_refuses_while_concluding_ends_the_task_error(
    router: Router,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    db: Engine,
    insert_pipeline: InsertPipeline,
) -> None:
    """A rule the engine cannot know (a CHECK added by hand) refuses the output: the task ends
    ERROR with the database's reason, the message is acknowledged."""
    with db.begin() as conn:
        conn.execute(
            text(
                "ALTER TABLE task_log ADD CONSTRAINT no_forbidden CHECK (NOT output ? 'forbidden')"
            )
        )
    insert_pipeline(
        "p",
        {"a": [], "b": ["a"]},
        handlers={"a": "python.call"},
        params={"a": call("forbidden_output")},
    )
    engine.start_batch(StartBatch("p", "b1"))

    assert deliver_all(router, publisher) == ["error"]

    assert rejected(db) == []
    found = rows(db)
    assert found[("a", -1)]["status"] == "ERROR"
    assert "the database refused" in found[("a", -1)]["error"]
    assert "no_forbidden" in found[("a", -1)]["error"]
    assert found[("b", -1)]["status"] == "UPSTREAM_FAILED"
    assert batch_status(db, "p", "b1") == "FAILED"
    assert alerts(publisher) == ["a"]


@pytest.mark.fresh_db  # it adds CHECK constraints to task_log
def test_a_deferral_whose_job_the_database_refuses_ends_the_task_error(
    router: Router,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    db: Engine,
    insert_pipeline: InsertPipeline,
) -> None:
    with db.begin() as conn:
        conn.execute(
            text(
                "ALTER TABLE task_log ADD CONSTRAINT no_forbidden_job CHECK (NOT job ? 'forbidden')"
            )
        )
    insert_pipeline("p", {"a": []}, handlers={"a": "test.defer"})
    engine.start_batch(StartBatch("p", "b1"))

    deliver_all(router, publisher)

    assert rejected(db) == []
    found = rows(db)[("a", -1)]
    assert found["status"] == "ERROR"
    assert "no_forbidden_job" in found["error"]
    assert publisher.drain(EVENTS_TOPIC) == [], "no poll is held for it"


# -- items read from a gs:// reference ---------------------------------------------------------

LISTS: dict[str, list[Any]] = {
    "gs://bucket/good.jsonl": [{"n": 0}, {"n": 1}],
    "gs://bucket/bad.jsonl": [{"n": 0}, {"n": 1}, {"n": 2, "name": "x\x00y"}],
    "gs://bucket/nan.jsonl": [1, float("nan")],
}


def read(ref: str, max_items: int) -> list[Any]:
    return LISTS[ref][: max_items + 1]


@pytest.mark.parametrize(("key", "index", "what"), [("bad", 2, "NUL"), ("nan", 1, "NaN")])
def test_an_item_from_a_reference_the_database_cannot_hold_ends_the_group_error_naming_it(
    router: Router,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    db: Engine,
    insert_pipeline: InsertPipeline,
    key: str,
    index: int,
    what: str,
) -> None:
    engine.item_reader = read
    mapped(insert_pipeline, db, call("reference", key=key))
    engine.start_batch(StartBatch("p", "b1"))

    answers = deliver_all(router, publisher)

    assert rejected(db) == [], "the parent's run_task is not a bad message"
    assert answers == ["success"]
    found = rows(db)
    assert found[("src", -1)]["status"] == "SUCCESS"
    group = found[("each", -1)]
    assert group["status"] == "ERROR"
    assert f"item {index}" in group["error"]
    assert what in group["error"]
    assert not [k for k in found if k[0] == "each" and k[1] >= 0], "no instance was created"
    assert found[("join", -1)]["status"] == "UPSTREAM_FAILED"
    assert batch_status(db, "p", "b1") == "FAILED"
    assert alerts(publisher) == ["each"]


@pytest.mark.fresh_db  # it adds CHECK constraints to task_log
def test_one_group_refused_by_the_database_does_not_stop_its_siblings(
    router: Router,
    engine: DagEngine,
    publisher: InMemoryPublisher,
    db: Engine,
    insert_pipeline: InsertPipeline,
) -> None:
    """Blast radius of one: two groups open in the parent's transaction; the database refuses
    an item of one (a CHECK the engine cannot know); the other expands and runs."""
    with db.begin() as conn:
        conn.execute(
            text("ALTER TABLE task_log ADD CONSTRAINT no_poison CHECK (item <> '\"poison\"')")
        )
    insert_pipeline(
        "p",
        {"src": [], "ok": ["src"], "bad": ["src"]},
        handlers={"src": "python.call"},
        params={"src": call("make_lists")},
    )
    mh.set_map(db, "p", "ok", {"over": "src.ok"})
    mh.set_map(db, "p", "bad", {"over": "src.bad"})
    engine.start_batch(StartBatch("p", "b1"))

    deliver_all(router, publisher)

    assert rejected(db) == []
    found = rows(db)
    assert found[("src", -1)]["status"] == "SUCCESS"
    assert found[("ok", -1)]["status"] == "SUCCESS"
    assert [found[("ok", i)]["status"] for i in range(3)] == ["SUCCESS"] * 3
    assert found[("bad", -1)]["status"] == "ERROR"
    assert "no_poison" in found[("bad", -1)]["error"]
    assert batch_status(db, "p", "b1") == "FAILED"
    assert alerts(publisher) == ["bad"]
